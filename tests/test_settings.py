"""One settings module is the only reader of the environment: every variable declared once (name, default, parser,
meaning) in mella_assets/settings.py, the same variables in README's Configuration table, and no other module
(entry points aside) reading ``os.environ``."""

import ast
import os
import re
from pathlib import Path

import dagster as dg
import pytest

from mella_assets.settings import DEFAULT_STAGE_TIMEOUT_S, SETTINGS, Settings, load_settings, variables

REPO = Path(__file__).resolve().parent.parent
# Entry points may read the environment: the settings module itself, the command line, the demo (which sets its
# variables) and the training script that runs in its own process (its bootstrap variables).
ENTRY_POINTS = {
    "mella_assets/settings.py",
    "mella_assets/cli.py",
    "mella_assets/demo/run.py",
    "mella_assets/training/train.py",
}
ENTRY_FOLDERS = ("mella_assets/commands/",)
ENV_NAMES = {"environ", "environb", "getenv"}


def environment_reads(path: Path) -> list[str]:
    """``os.environ`` / ``os.getenv`` / ``environ.get`` (and ``from os import environ``) in one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    os_names = {"os"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            os_names.update(alias.asname or alias.name for alias in node.names if alias.name == "os")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [f"line {node.lineno}: from os import {a.name}" for a in node.names if a.name in ENV_NAMES]
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
            continue
        if node.attr in ENV_NAMES and node.value.id in os_names:
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
        elif node.attr == "get" and node.value.id == "environ":
            found.append(f"line {node.lineno}: environ.get")
    return found


def test_only_the_settings_module_and_entry_points_read_the_environment():
    offenders = {}
    for folder in ("mella_assets", "resources", "sensors"):
        for path in sorted((REPO / folder).rglob("*.py")):
            name = path.relative_to(REPO).as_posix()
            if name in ENTRY_POINTS or name.startswith(ENTRY_FOLDERS):
                continue
            reads = environment_reads(path)
            if reads:
                offenders[name] = reads
    assert offenders == {}, f"read settings through mella_assets/settings.py instead: {offenders}"


def test_the_checker_finds_every_way_of_reading_the_environment(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import os\nimport os as system\nfrom os import getenv\n"
        "a = os.environ['X']\nb = system.getenv('Y')\nc = environ.get('Z')\nd = os.path.join('a')\n"
    )
    assert [read.split(": ")[1] for read in environment_reads(module)] == [
        "from os import getenv",
        "os.environ",
        "system.getenv",
        "environ.get",
    ]


def readme_variables() -> list[str]:
    """The first column of README's Configuration table, one entry per variable named there."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    names = []
    for line in section.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            names += re.findall(r"`([^`]+)`", first)
    return names


def test_the_readme_table_lists_exactly_the_declared_variables_each_once():
    listed = readme_variables()
    declared = [setting.env for setting in SETTINGS]
    assert len(listed) == len(set(listed)), f"listed twice: {sorted({n for n in listed if listed.count(n) > 1})}"
    assert len(declared) == len(set(declared))
    assert sorted(listed) == sorted(declared)
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*(_<STAGE>)?", name) for name in listed)  # no `_SUFFIX` shorthand


def test_every_setting_is_documented_and_named_after_its_field():
    for setting in SETTINGS:
        assert setting.help.strip() and setting.env.isupper()
    for name, field in Settings.__dataclass_fields__.items():
        env = field.metadata["setting"].env
        expected = "stage_timeouts" if env.endswith("_<STAGE>") else env.removeprefix("MELLA_").lower()
        assert name == expected, (name, env)


def test_defaults_are_those_of_the_readme_and_the_code_before():
    settings = load_settings({})
    assert settings == Settings()
    assert settings.lake == ".mella/lake"
    assert settings.lake_cache == Path.home() / ".cache" / "mella" / "lake"
    assert (settings.s3_connect_timeout_s, settings.s3_read_timeout_s, settings.s3_max_attempts) == (10.0, 60.0, 5)
    assert (settings.s3_region, settings.s3_endpoint) == ("us-east-1", None)
    assert settings.languages == () and settings.languages_file is None
    assert settings.captioner_model == settings.base_model == "lake://models/tiny/captioner"
    assert settings.translator_model == "lake://models/tiny/translator"
    assert (settings.captioner_backend, settings.langid_backend, settings.translation_language_qa) == (
        "transformers",
        "lingua",
        "enforce",
    )
    assert (settings.training_method, settings.training_steps, settings.training_lr) == ("lora", 30, 1e-3)
    assert (settings.training_nproc, settings.training_launcher, settings.training_runner) == (
        1,
        "python",
        "subprocess",
    )
    assert (settings.training_service_account, settings.training_env_secret) == (
        "mella-training",
        "mella-lake-credentials",
    )
    assert (settings.training_gpus, settings.training_cpu, settings.training_memory) == (1, "8", "64Gi")
    assert settings.training_node_selector == {"nvidia.com/gpu.present": "true"}
    assert (settings.retrain_min_new_rows, settings.retrain_min_growth_share) == (100, 0.0)
    assert (settings.retrain_cooldown_seconds, settings.retrain_max_concurrent) == (3600, 1)
    assert settings.stage_timeout("images") == (
        DEFAULT_STAGE_TIMEOUT_S,
        "default; set MELLA_STAGE_TIMEOUT_S or MELLA_STAGE_TIMEOUT_S_IMAGES",
    )
    assert settings.demo_site_port == 18470
    # A mutable default is each Settings' own.
    settings.training_tolerations.append({"key": "x"})
    assert len(Settings().training_tolerations) == 1


def test_values_are_parsed_and_empty_ones_count_as_unset():
    settings = load_settings(
        {
            "MELLA_LAKE": " s3://bucket/lake ",
            "MELLA_LAKE_CACHE": "",
            "MELLA_LANGUAGES": "cs, uk,,sw",
            "MELLA_S3_MAX_ATTEMPTS": "2",
            "MELLA_S3_READ_TIMEOUT_S": "5.5",
            "MELLA_MODEL_ROOTS": os.pathsep.join(["/models", "", "/more"]),
            "MELLA_TRAINING_NODE_SELECTOR": '{"pool": "gpu"}',
            "MELLA_STAGE_TIMEOUT_S": "600",
            "MELLA_STAGE_TIMEOUT_S_IMAGES": "30",
            "MELLA_DEMO_SITE_PORT": "18999",
            "AWS_DEFAULT_REGION": "eu-north-1",
            "AWS_ENDPOINT_URL_S3": "http://minio:9000",
        }
    )
    assert settings.lake == "s3://bucket/lake" and settings.lake_cache == Settings().lake_cache
    assert settings.languages == ("cs", "uk", "sw")
    assert (settings.s3_max_attempts, settings.s3_read_timeout_s) == (2, 5.5)
    assert settings.model_roots == (Path("/models").resolve(), Path("/more").resolve())
    assert settings.training_node_selector == {"pool": "gpu"}
    assert settings.stage_timeout("images") == (30.0, "MELLA_STAGE_TIMEOUT_S_IMAGES=30")
    assert settings.stage_timeout("d_know") == (600.0, "MELLA_STAGE_TIMEOUT_S=600")
    assert settings.demo_site_port == 18999
    assert (settings.s3_region, settings.s3_endpoint) == ("eu-north-1", "http://minio:9000")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MELLA_TRAINING_STEPS", "many", "MELLA_TRAINING_STEPS must be a whole number, not 'many'"),
        ("MELLA_S3_CONNECT_TIMEOUT_S", "soon", "MELLA_S3_CONNECT_TIMEOUT_S must be a number"),
        ("MELLA_STAGE_TIMEOUT_S_IMAGES", "-1", "MELLA_STAGE_TIMEOUT_S_IMAGES must be a positive number of seconds"),
        ("MELLA_TRAINING_TOLERATIONS", "[", "MELLA_TRAINING_TOLERATIONS must be JSON"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(name, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_settings({name: value})


def test_secrets_stay_out_of_the_repr_and_out_of_error_messages():
    settings = load_settings({"AWS_SECRET_ACCESS_KEY": "s3-secret-value", "MELLA_CAPTIONER_API_KEY": "sk-value"})
    assert settings.aws_secret_access_key == "s3-secret-value" and settings.by_env("MELLA_CAPTIONER_API_KEY")
    assert "s3-secret-value" not in repr(settings) and "sk-value" not in repr(settings)
    with pytest.raises(ValueError, match="not a MELLA setting"):
        settings.by_env("HOME")


def test_settings_are_read_when_loaded_not_at_import(monkeypatch):
    monkeypatch.setenv("MELLA_TRAINING_STEPS", "7")
    assert load_settings().training_steps == 7
    monkeypatch.setenv("MELLA_TRAINING_STEPS", "8")
    assert load_settings().training_steps == 8
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert variables(["HF_HUB_OFFLINE", "HF_ENDPOINT"]) == {"HF_HUB_OFFLINE": "1"}


def test_resources_take_their_defaults_from_the_settings_when_built(monkeypatch, tmp_path):
    from mella_assets.resources import Captioner, Lake, Training

    monkeypatch.setenv("MELLA_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("MELLA_CAPTIONER_MODEL", "org/captioner")
    monkeypatch.setenv("MELLA_TRAINING_RUNNER", "k8s")
    monkeypatch.setenv("MELLA_TRAINING_GPUS", "2")
    assert Lake().root == str(tmp_path / "lake")
    assert Captioner().model == "org/captioner"
    training = Training()
    assert (training.runner, training.pod.gpus) == ("k8s", 2)


def test_api_keys_are_env_var_fields_resolved_when_a_run_starts(monkeypatch, tmp_path):
    from mella_assets.resources import Captioner, build_resources

    key = "sk-settings-test-0123456789"
    monkeypatch.setenv("MELLA_CAPTIONER_API_KEY", key)
    monkeypatch.delenv("MELLA_TRANSLATOR_API_KEY", raising=False)
    resources = build_resources(lake_root=str(tmp_path))
    captioner, translator = resources["captioner"], resources["translator"]
    assert isinstance(captioner.api_key, dg.EnvVar) and captioner.api_key == "MELLA_CAPTIONER_API_KEY"
    assert translator.api_key is None  # unset now: looked up in the settings when the backend loads
    assert key not in repr(captioner) and key not in str(captioner.model_dump())

    monkeypatch.setenv("MELLA_CAPTIONER_API_KEY", key + "-rotated")  # read when the run starts, not before

    @dg.asset
    def sends_the_key(captioner_resource: Captioner) -> bool:
        client = captioner_resource.client("served-model")
        return client._api_key == key + "-rotated" and key not in repr(client)

    result = dg.materialize([sends_the_key], resources={"captioner_resource": captioner})
    assert result.success and result.output_for_node("sends_the_key") is True
