"""Chat templates of five released styles, built without ``{% generation %}`` markers as the releases ship them
(Qwen2-VL, InternVL and most others have none), and copies of the tiny VLM that carry them."""

import shutil
from pathlib import Path

from mella_assets.demo.tiny_models import TinyModels


def content_loop(image: str) -> str:
    """The Jinja loop over a message's content items: ``image`` for an image item, the text for a text item."""
    return (
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}" + image + "{% else %}{{ c['text'] }}{% endif %}"
        "{% endfor %}"
    )


# style → (template without generation markers, what ends an assistant turn)
TEMPLATES = {
    "llava": (
        "{% for m in messages %}{% if m['role'] == 'user' %}USER: " + content_loop("<image>\n") + " "
        "{% else %}ASSISTANT: " + content_loop("") + "</s>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT:{% endif %}",
        "</s>",
    ),
    "chatml_qwen": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n" + content_loop("<|vision_start|><image><|vision_end|>")
        + "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        "<|im_end|>",
    ),
    "llama3": (
        "<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
        + content_loop("<image>") + "<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
        "<|eot_id|>",
    ),
    "gemma": (
        "<bos>{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
        + content_loop("<image>") + "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n"
        "{% endif %}",
        "<end_of_turn>",
    ),
    "idefics": (
        "<|begin_of_text|>{% for m in messages %}{{ m['role'] | capitalize }}"
        "{% if m['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}" + content_loop("<image>")
        + "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}",
        "<end_of_utterance>",
    ),
}  # fmt: skip


def with_template(tiny: TinyModels, folder: Path, template: str) -> Path:
    """A copy of the tiny VLM whose processor and tokenizer carry ``template`` (saved and loaded like a release)."""
    from transformers import AutoProcessor

    shutil.copytree(tiny.captioner, folder)
    processor = AutoProcessor.from_pretrained(folder)
    processor.chat_template = template
    processor.tokenizer.chat_template = template
    processor.save_pretrained(folder)
    return folder


def load_processor(folder: Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(folder)
