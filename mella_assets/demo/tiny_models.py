"""Tiny, randomly initialised models that stand in for the real captioner and translator offline.

``build_tiny_models`` trains a byte-level BPE tokenizer on the given texts and saves a LLaVA-architecture VLM
(CLIP vision tower + Llama text model) and an NLLB-architecture (M2M100) translator that share it. Both load
through the same ``from_pretrained`` code as real checkpoints. Their outputs are gibberish by design: the
weights are random, only the shapes, formats and code paths are real.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Bump when the builder changes what it writes, so cached folders are rebuilt.
BUILDER_VERSION = "tiny-models-v1"
BUILD_FILE = "build.json"
IMAGE_TOKEN = "<image>"
BASE_SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", IMAGE_TOKEN)
VOCAB_SIZE = 3000
IMAGE_SIZE = 32
PATCH_SIZE = 16

# User content may be a plain string or a list of {"type": "image"} / {"type": "text"} items; the assistant turn
# is wrapped in {% generation %} so apply_chat_template(..., return_assistant_tokens_mask=True) marks it.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<s>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "{{ '</s>' }}{% endgeneration %}"
    "{% else %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<image>' }}{% elif item['type'] == 'text' %}{{ item['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "{{ '</s>' }}"
    "{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<s>assistant\n' }}{% endif %}"
)

# A few sentences per language so tests and the demo can build a tokenizer that covers every script.
SAMPLE_TEXTS: tuple[str, ...] = (
    "A red tram crosses the old stone bridge in the morning.",
    "Two children are playing football in a small park.",
    "The market sells fresh fruit, bread and flowers.",
    "A woman reads a newspaper at a café table.",
    "Snow covers the roofs of the village church.",
    "Describe the image in detail: the objects, the setting, any visible text.",
    "يعبر الترام الأحمر الجسر الحجري القديم في الصباح.",
    "يلعب طفلان كرة القدم في حديقة صغيرة.",
    "يبيع السوق الفواكه الطازجة والخبز والزهور.",
    "تقرأ امرأة صحيفة على طاولة في المقهى.",
    "Červená tramvaj přejíždí ráno starý kamenný most.",
    "Dvě děti hrají fotbal v malém parku.",
    "Na trhu se prodává čerstvé ovoce, chléb a květiny.",
    "Žena čte noviny u stolku v kavárně.",
    "A piros villamos reggel átmegy a régi kőhídon.",
    "Két gyerek focizik egy kis parkban.",
    "A piacon friss gyümölcsöt, kenyeret és virágot árulnak.",
    "Egy nő újságot olvas a kávézó asztalánál.",
    "빨간 전차가 아침에 오래된 돌다리를 건넙니다.",
    "두 아이가 작은 공원에서 축구를 하고 있습니다.",
    "시장에서는 신선한 과일과 빵과 꽃을 팝니다.",
    "한 여자가 카페 테이블에서 신문을 읽고 있습니다.",
    "Красный трамвай утром пересекает старый каменный мост.",
    "Двое детей играют в футбол в маленьком парке.",
    "На рынке продают свежие фрукты, хлеб и цветы.",
    "Женщина читает газету за столиком в кафе.",
    "Црвени трамвај ујутру прелази стари камени мост.",
    "Двоје деце игра фудбал у малом парку.",
    "Љубав, њива, ђак, ћевап и џеп су српске речи.",
    "Crveni tramvaj ujutru prelazi stari kameni most.",
    "Ljubav, njiva, đak, ćevap i džep su srpske reči.",
    "รถรางสีแดงข้ามสะพานหินเก่าในตอนเช้า",
    "เด็กสองคนกำลังเล่นฟุตบอลในสวนสาธารณะเล็กๆ",
    "ตลาดขายผลไม้สด ขนมปัง และดอกไม้",
    "ผู้หญิงคนหนึ่งอ่านหนังสือพิมพ์ที่โต๊ะในร้านกาแฟ",
    "Chiếc xe điện màu đỏ băng qua cây cầu đá cũ vào buổi sáng.",
    "Hai đứa trẻ đang chơi bóng đá trong một công viên nhỏ.",
    "Chợ bán trái cây tươi, bánh mì và hoa.",
    "Một người phụ nữ đọc báo ở bàn cà phê.",
    "An old man sells roasted chestnuts on a winter street.",
    "A fishing boat is tied to the pier at sunset.",
    "The museum entrance has a large sign with golden letters.",
    "Students walk past the university library in the rain.",
    "A bowl of soup with noodles and green herbs on a wooden table.",
    "يجلس رجل عجوز أمام متجر صغير في السوق القديم.",
    "قارب صيد مربوط بالرصيف عند غروب الشمس.",
    "لافتة كبيرة بحروف ذهبية فوق مدخل المتحف.",
    "طبق من الحمص والخبز على طاولة خشبية.",
    "Starý muž prodává na zimní ulici pečené kaštany.",
    "Rybářská loď je při západu slunce přivázaná k molu.",
    "Studenti jdou v dešti kolem univerzitní knihovny.",
    "Miska polévky s nudlemi a zelenými bylinkami na dřevěném stole.",
    "Egy idős férfi sült gesztenyét árul a téli utcán.",
    "Egy halászhajó a mólóhoz van kötve naplementekor.",
    "A múzeum bejáratánál egy nagy tábla áll arany betűkkel.",
    "Egy tál leves tésztával és zöld fűszernövényekkel a fa asztalon.",
    "한 노인이 겨울 거리에서 군밤을 팔고 있습니다.",
    "해질녘에 고깃배가 부두에 묶여 있습니다.",
    "박물관 입구에는 금색 글자가 적힌 큰 간판이 있습니다.",
    "나무 탁자 위에 국수와 푸른 채소가 든 국 한 그릇이 있습니다.",
    "Старик продаёт жареные каштаны на зимней улице.",
    "На закате рыбацкая лодка привязана к причалу.",
    "Студенты идут под дождём мимо университетской библиотеки.",
    "Тарелка супа с лапшой и зеленью на деревянном столе.",
    "Старац продаје печене кестене на зимској улици.",
    "Рибарски чамац је у сумрак везан за пристаниште.",
    "Студенти пролазе поред универзитетске библиотеке по киши.",
    "Džak pun kukuruza stoji pored starog mlina.",
    "Činija čorbe sa rezancima i zelenim začinima na drvenom stolu.",
    "ชายชราขายเกาลัดคั่วบนถนนในฤดูหนาว",
    "เรือประมงผูกอยู่กับท่าเรือตอนพระอาทิตย์ตก",
    "ป้ายขนาดใหญ่ที่มีตัวอักษรสีทองอยู่หน้าพิพิธภัณฑ์",
    "ก๋วยเตี๋ยวหนึ่งชามวางอยู่บนโต๊ะไม้",
    "Một ông lão bán hạt dẻ rang trên con phố mùa đông.",
    "Một chiếc thuyền đánh cá được buộc vào cầu tàu lúc hoàng hôn.",
    "Sinh viên đi ngang qua thư viện trường đại học dưới mưa.",
    "Một bát phở với bánh phở và rau thơm trên bàn gỗ.",
)


@dataclass(frozen=True)
class TinyModels:
    """Folders of the saved tiny models."""

    captioner: Path
    translator: Path


def language_code_tokens() -> list[str]:
    """NLLB codes of every registry language plus English, in a stable order."""
    from mella_assets.languages import REGISTRY

    return sorted({language.nllb_code for language in REGISTRY.values()} | {"eng_Latn"})


def build_hash(texts: Sequence[str], seed: int) -> str:
    """Content key of a build: the texts, the seed and the builder version."""
    payload = json.dumps({"texts": list(texts), "seed": seed, "builder": BUILDER_VERSION}, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def build_tiny_models(out_dir: Path, texts: Sequence[str], seed: int = 0) -> TinyModels:
    """Build (or reuse) the tiny captioner and translator in ``out_dir``; same texts and seed give same weights."""
    out_dir = Path(out_dir)
    models = TinyModels(captioner=out_dir / "captioner", translator=out_dir / "translator")
    key = build_hash(texts, seed)
    marker = out_dir / BUILD_FILE
    complete = marker.exists() and models.captioner.is_dir() and models.translator.is_dir()
    if complete and json.loads(marker.read_text()).get("hash") == key:
        return models

    import torch

    marker.unlink(missing_ok=True)  # written last: its absence marks an unfinished build
    for folder in (models.captioner, models.translator):
        shutil.rmtree(folder, ignore_errors=True)

    tokenizer = _train_tokenizer(texts)
    # The translator's tokenizer is saved first: saving the processor tags the shared tokenizer as LLaVA's.
    torch.manual_seed(seed + 1)
    _build_translator(tokenizer).save_pretrained(models.translator)
    tokenizer.save_pretrained(models.translator)
    torch.manual_seed(seed)
    _build_captioner(tokenizer).save_pretrained(models.captioner)
    _build_processor(tokenizer).save_pretrained(models.captioner)

    marker.write_text(
        json.dumps({"hash": key, "builder": BUILDER_VERSION, "seed": seed, "texts": len(texts)}, indent=2)
    )
    return models


def _train_tokenizer(texts: Sequence[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = [*BASE_SPECIAL_TOKENS, *language_code_tokens()]
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    # No prefix space and no offset trimming: decode(encode(text)) must give back the text byte for byte.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(texts), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=special[len(BASE_SPECIAL_TOKENS) - 1 :],
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _ids(tokenizer) -> dict[str, int]:
    return {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def _build_processor(tokenizer):
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    # The PIL image processor: the default CLIP one needs torchvision, which cannot be installed here.
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )


def _build_captioner(tokenizer):
    from transformers import (
        CLIPVisionConfig,
        GenerationConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        **_ids(tokenizer),
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=True,
    )
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        do_sample=False, max_new_tokens=48, no_repeat_ngram_size=3, **_ids(tokenizer)
    )
    return model


def _build_translator(tokenizer):
    from transformers import GenerationConfig, M2M100Config, M2M100ForConditionalGeneration

    config = M2M100Config(
        vocab_size=len(tokenizer),
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=256,
        scale_embedding=True,
        decoder_start_token_id=tokenizer.eos_token_id,  # as NLLB: </s> starts decoding, then the language code
        **_ids(tokenizer),
    )
    model = M2M100ForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        do_sample=False,
        max_new_tokens=64,
        no_repeat_ngram_size=3,
        decoder_start_token_id=tokenizer.eos_token_id,
        **_ids(tokenizer),
    )
    return model
