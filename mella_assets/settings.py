"""Every setting MELLA takes from the environment, declared once, and the one function that reads them.

Each field of :class:`Settings` is declared with :func:`setting`: the variable's name, its default, how its text
is parsed, and what it means (README's Configuration table lists the same variables). :func:`load_settings` is
the only reader of ``os.environ`` in the package (entry points aside: ``cli.py``, ``commands/``, the demo, the
training script's own bootstrap); library code gets a :class:`Settings` object, or values taken from one, as
arguments. Settings are loaded where they are used (a resource being built, a stage starting), never at import,
so a variable set before that point is seen. A variable set to an empty string counts as unset.

Dagster-free: the training pod imports this module too.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

DEFAULT_STAGE_TIMEOUT_S = 6 * 3600.0
STAGE_TIMEOUT_ENV = "MELLA_STAGE_TIMEOUT_S"
FAMILY_SUFFIX = "_<STAGE>"


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, default, parser and meaning. ``family``: the name ends in
    ``_<STAGE>`` and stands for every variable with that prefix (their values keyed by the upper-case suffix)."""

    env: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    secret: bool = False

    @property
    def family(self) -> bool:
        return self.env.endswith(FAMILY_SUFFIX)

    @property
    def prefix(self) -> str:
        """``MELLA_STAGE_TIMEOUT_S_`` for the family ``MELLA_STAGE_TIMEOUT_S_<STAGE>``."""
        return self.env.removesuffix("<STAGE>")

    def value(self, raw: str, name: str | None = None) -> Any:
        """``raw`` parsed; a ValueError names the variable and says what it must be."""
        try:
            return self.parse(raw)
        except (ValueError, TypeError) as error:
            shown = "<hidden>" if self.secret else repr(raw)
            raise ValueError(f"{name or self.env} {error}, not {shown}") from None


def setting(env: str, default: Any, parse: Callable[[str], Any], help: str, *, secret: bool = False) -> Any:
    """A field of :class:`Settings` read from ``env`` (a secret is left out of ``repr``)."""
    record = Setting(env, default, parse, help, secret)
    if isinstance(default, (dict, list)):
        return dataclasses.field(
            default_factory=lambda: json.loads(json.dumps(default)), repr=not secret, metadata={"setting": record}
        )
    return dataclasses.field(default=default, repr=not secret, metadata={"setting": record})


# -- parsers: each raises ValueError("must be ...") ---------------------------------------------------------------
def _text(raw: str) -> str:
    return raw


def _whole(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("must be a whole number") from None


def _number(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError("must be a number") from None


def _positive_seconds(raw: str) -> float:
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ValueError("must be a positive number of seconds")
    return seconds


def _count(raw: str) -> int:
    try:
        count = int(raw)
    except ValueError:
        count = -1
    if count < 0:
        raise ValueError("must be a whole number, 0 or more")
    return count


def _seconds(raw: str) -> float:
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise ValueError("must be a number of seconds, 0 or more")
    return seconds


def _shard_count(raw: str) -> int:
    count = _whole(raw)
    # Dagster's guidance: at most ~100k partitions per asset; 8 languages x 10,000 shards stays under it.
    if not 1 <= count <= 10_000:
        raise ValueError("must be a whole number from 1 to 10000")
    return count


def _positive(raw: str) -> int:
    count = _whole(raw)
    if count < 1:
        raise ValueError("must be a whole number of at least 1")
    return count


def _share(raw: str) -> float:
    try:
        share = float(raw)
    except ValueError:
        share = -1.0
    if not 0.0 <= share <= 1.0:
        raise ValueError("must be a number from 0 to 1")
    return share


def _flag(raw: str) -> bool:
    """``1`` is on; anything else off (as the demo sets it)."""
    return raw == "1"


def _path(raw: str) -> Path:
    return Path(raw).expanduser()


def _paths(raw: str) -> tuple[Path, ...]:
    """``os.pathsep``-separated folders, resolved (symbolic links followed)."""
    return tuple(Path(part).expanduser().resolve() for part in raw.split(os.pathsep) if part.strip())


def _codes(raw: str) -> tuple[str, ...]:
    return tuple(code.strip() for code in raw.split(",") if code.strip())


def _json(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise ValueError("must be JSON") from None


TINY_CAPTIONER = "lake://models/tiny/captioner"
TINY_TRANSLATOR = "lake://models/tiny/translator"


@dataclass(frozen=True)
class Settings:
    """MELLA's settings: one field per environment variable (README, Configuration)."""

    # -- the lake ----------------------------------------------------------------------------------------------
    lake: str = setting(
        "MELLA_LAKE", ".mella/lake", _text,
        "lake folder or s3://bucket/prefix: tables/<asset>/language=<code>/data.parquet, images/, models/, "
        "checkpoints/, exports/, landing/<code>/",
    )  # fmt: skip
    lake_cache: Path = setting(  # noqa: RUF009 (setting() is a dataclasses.field)
        "MELLA_LAKE_CACHE", Path.home() / ".cache" / "mella" / "lake", _path,
        "local copies of S3 blobs that libraries need as files (WARCs, models, checkpoints)",
    )  # fmt: skip
    aws_access_key_id: str | None = setting(
        "AWS_ACCESS_KEY_ID", None, _text, "access key of an S3 lake (boto3 / s3fs also read it themselves)",
        secret=True,
    )  # fmt: skip
    aws_secret_access_key: str | None = setting(
        "AWS_SECRET_ACCESS_KEY", None, _text, "secret key of an S3 lake; never logged", secret=True
    )
    aws_session_token: str | None = setting(
        "AWS_SESSION_TOKEN", None, _text, "session token of temporary S3 credentials; never logged", secret=True
    )
    aws_region: str | None = setting("AWS_REGION", None, _text, "region of an S3 lake (default us-east-1)")
    aws_default_region: str | None = setting(
        "AWS_DEFAULT_REGION", None, _text, "region of an S3 lake when AWS_REGION is unset"
    )
    aws_endpoint_url: str | None = setting(
        "AWS_ENDPOINT_URL", None, _text, "endpoint of the S3 API (MinIO, moto; unset for AWS)"
    )
    aws_endpoint_url_s3: str | None = setting(
        "AWS_ENDPOINT_URL_S3", None, _text, "endpoint of the S3 API when AWS_ENDPOINT_URL is unset"
    )
    s3_connect_timeout_s: float = setting(
        "MELLA_S3_CONNECT_TIMEOUT_S", 10.0, _number, "seconds to connect to the S3 API"
    )
    s3_read_timeout_s: float = setting("MELLA_S3_READ_TIMEOUT_S", 60.0, _number, "seconds to wait for an S3 read")
    s3_max_attempts: int = setting(
        "MELLA_S3_MAX_ATTEMPTS", 5, _whole, "attempts of one S3 call (botocore's standard retry mode)"
    )
    # -- languages ---------------------------------------------------------------------------------------------
    languages: tuple[str, ...] = setting(
        "MELLA_LANGUAGES", (), _codes,
        "comma-separated language partitions (empty: the paper's eight, ar,cs,hu,ko,ru,sr,th,vi)",
    )  # fmt: skip
    languages_file: str | None = setting(
        "MELLA_LANGUAGES_FILE", None, _text, "JSON list of extra languages (fields of languages.Language)"
    )
    # -- models ------------------------------------------------------------------------------------------------
    captioner_model: str = setting(
        "MELLA_CAPTIONER_MODEL", TINY_CAPTIONER, _text,
        "image-text-to-text checkpoint (hub id, path or lake:// folder); for the openai backend the served name",
    )  # fmt: skip
    translator_model: str = setting(
        "MELLA_TRANSLATOR_MODEL", TINY_TRANSLATOR, _text,
        "seq2seq translator (hub id, path or lake:// folder); for the openai backend the served name",
    )  # fmt: skip
    base_model: str = setting("MELLA_BASE_MODEL", TINY_CAPTIONER, _text, "the MLLM to fine-tune and evaluate")
    captioner_backend: str = setting(
        "MELLA_CAPTIONER_BACKEND", "transformers", _text, "transformers (in-process) or openai (chat completions)"
    )
    translator_backend: str = setting(
        "MELLA_TRANSLATOR_BACKEND", "transformers", _text, "transformers (in-process) or openai (chat completions)"
    )
    captioner_url: str = setting("MELLA_CAPTIONER_URL", "", _text, "server base URL of the openai captioner")
    translator_url: str = setting("MELLA_TRANSLATOR_URL", "", _text, "server base URL of the openai translator")
    captioner_api_key: str | None = setting(
        "MELLA_CAPTIONER_API_KEY", None, _text, "API key of the openai captioner; never logged", secret=True
    )
    translator_api_key: str | None = setting(
        "MELLA_TRANSLATOR_API_KEY", None, _text, "API key of the openai translator; never logged", secret=True
    )
    evaluation_backend: str = setting(
        "MELLA_EVALUATION_BACKEND", "transformers", _text,
        "transformers (evaluated models loaded in-process) or openai (chat completions, e.g. vLLM serving them)",
    )  # fmt: skip
    evaluation_url: str = setting("MELLA_EVALUATION_URL", "", _text, "server base URL of the openai evaluator")
    evaluation_api_key: str | None = setting(
        "MELLA_EVALUATION_API_KEY", None, _text, "API key of the openai evaluator; never logged", secret=True
    )
    evaluation_base_model: str = setting(
        "MELLA_EVALUATION_BASE_MODEL", "", _text,
        "openai evaluator: served name of the base model (empty: MELLA_BASE_MODEL, vLLM's name for a hub id)",
    )  # fmt: skip
    evaluation_checkpoint_model: str = setting(
        "MELLA_EVALUATION_CHECKPOINT_MODEL", "{checkpoint_id}", _text,
        "openai evaluator: served name of a fine-tuned checkpoint, {checkpoint_id} replaced by its id "
        "(vLLM: --lora-modules <id>=<checkpoint folder>)",
    )  # fmt: skip
    langid_backend: str = setting("MELLA_LANGID_BACKEND", "lingua", _text, "lingua (cascade) or langdetect")
    translation_language_qa: str = setting(
        "MELLA_TRANSLATION_LANGUAGE_QA", "enforce", _text,
        "enforce: reject translations not in the target language; anything else (record): only note the check",
    )  # fmt: skip
    model_roots: tuple[Path, ...] = setting(
        "MELLA_MODEL_ROOTS", (), _paths, "folders local model paths must lie in (os.pathsep-separated; empty: any)"
    )
    # -- training ----------------------------------------------------------------------------------------------
    training_method: str = setting("MELLA_TRAINING_METHOD", "lora", _text, "lora (PEFT adapter) or full")
    training_steps: int = setting("MELLA_TRAINING_STEPS", 30, _whole, "optimizer steps")
    training_lr: float = setting("MELLA_TRAINING_LR", 1e-3, _number, "AdamW learning rate")
    training_nproc: int = setting("MELLA_TRAINING_NPROC", 1, _whole, "processes (GPUs) per node")
    training_launcher: str = setting("MELLA_TRAINING_LAUNCHER", "python", _text, "python or torchrun")
    training_trainer: str = setting(
        "MELLA_TRAINING_TRAINER", "builtin", _text, "builtin (the project's SFT loop) or trl (TRL's SFTTrainer)"
    )
    training_runner: str = setting(
        "MELLA_TRAINING_RUNNER", "subprocess", _text, "subprocess (this machine) or k8s (a pod per run)"
    )
    training_image: str = setting("MELLA_TRAINING_IMAGE", "", _text, "image of the training pod")
    training_namespace: str = setting(
        "MELLA_TRAINING_NAMESPACE", "", _text, "namespace of the training pods (empty: the run's own)"
    )
    training_service_account: str = setting(
        "MELLA_TRAINING_SERVICE_ACCOUNT", "mella-training", _text, "service account of the training pod"
    )
    training_env_secret: str = setting(
        "MELLA_TRAINING_ENV_SECRET", "mella-lake-credentials", _text,
        "Secret whose keys become the training pod's environment (the lake credentials)",
    )  # fmt: skip
    training_gpus: int = setting("MELLA_TRAINING_GPUS", 1, _whole, "nvidia.com/gpu limit of the training pod")
    training_cpu: str = setting("MELLA_TRAINING_CPU", "8", _text, "CPU request of the training pod")
    training_memory: str = setting("MELLA_TRAINING_MEMORY", "64Gi", _text, "memory of the training pod")
    training_scratch: Path | None = setting(  # noqa: RUF009 (setting() is a dataclasses.field)
        "MELLA_TRAINING_SCRATCH", None, _path, "scratch folder of a training process (default: the temp folder)"
    )
    training_node_selector: dict[str, str] = setting(  # noqa: RUF009 (setting() is a dataclasses.field)
        "MELLA_TRAINING_NODE_SELECTOR", {"nvidia.com/gpu.present": "true"}, _json,
        "node selector of the training pod (JSON)",
    )  # fmt: skip
    training_tolerations: list[dict[str, str]] = setting(  # noqa: RUF009 (setting() is a dataclasses.field)
        "MELLA_TRAINING_TOLERATIONS", [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        _json, "tolerations of the training pod (JSON)",
    )  # fmt: skip
    # -- GPU placement on Kubernetes ---------------------------------------------------------------------------
    executor: str = setting(
        "MELLA_EXECUTOR", "in_process", _text,
        "in_process (every step of a run in the run's process: models load once per run), multiprocess "
        "(Dagster's default: a process per step) or k8s (dagster_k8s's k8s_job_executor: one pod per step, GPU "
        "steps on GPU nodes)",
    )  # fmt: skip
    inference_gpus: int = setting(
        "MELLA_INFERENCE_GPUS", 1, _whole, "nvidia.com/gpu limit of a step pod that loads a model to generate"
    )
    inference_cpu: str = setting("MELLA_INFERENCE_CPU", "4", _text, "CPU request of a model-loading step pod")
    inference_memory: str = setting(
        "MELLA_INFERENCE_MEMORY", "32Gi", _text, "memory of a model-loading step pod (request and limit)"
    )
    retrain_min_new_rows: int = setting(
        "MELLA_RETRAIN_MIN_NEW_ROWS", 100, _whole, "train rows gained since the latest checkpoint that retrain"
    )
    retrain_min_growth_share: float = setting(
        "MELLA_RETRAIN_MIN_GROWTH_SHARE", 0.0, _number, "growth as a share of the checkpoint's rows (0: off)"
    )
    retrain_cooldown_seconds: int = setting(
        "MELLA_RETRAIN_COOLDOWN_SECONDS", 3600, _whole, "least seconds between two retraining requests"
    )
    retrain_max_concurrent: int = setting(
        "MELLA_RETRAIN_MAX_CONCURRENT", 1, _whole, "training runs queued or in progress at most"
    )
    # -- retries and progress ------------------------------------------------------------------------------
    retry_max_retries: int = setting(
        "MELLA_RETRY_MAX_RETRIES", 3, _count,
        "times a failed network-bound step (crawl_sources, raw_crawl, images; model steps with a remote backend) "
        "is retried (0: never)",
    )  # fmt: skip
    retry_delay_s: float = setting(
        "MELLA_RETRY_DELAY_S", 30.0, _seconds,
        "base delay before a retry, seconds: 1, 3, 7 x the delay (30, 90, 210 s), ± one delay of jitter",
    )  # fmt: skip
    progress_interval_s: float = setting(
        "MELLA_PROGRESS_INTERVAL_S", 10.0, _seconds,
        "seconds between two progress lines of a long loop in the run log (first and last line always)",
    )  # fmt: skip
    # -- data mix --------------------------------------------------------------------------------------------
    dknow_max_headline_share: float = setting(
        "MELLA_DKNOW_MAX_HEADLINE_SHARE", 1.0, _share,
        "most share of D_know pairs whose alt text is a reused headline (alt_kind headline); the excess is dropped "
        "by content hash as headline_over_mix (1: no cap)",
    )  # fmt: skip
    dknow_memory_mb: int = setting(
        "MELLA_DKNOW_MEMORY_MB", 256, _positive,
        "MiB DuckDB may hold while d_know merges a language's shards (beyond it, it spills to TMPDIR)",
    )  # fmt: skip
    # -- fan-out and Common Crawl --------------------------------------------------------------------------------
    shards: int = setting(
        "MELLA_SHARDS", 4, _shard_count,
        "shards per language of the per-page stages (raw_crawl, alt_text_pairs, images): a site's pages share one, "
        "by the hash of its domain; changing it re-partitions (rematerialize those stages)",
    )  # fmt: skip
    shards_per_run: int = setting(
        "MELLA_SHARDS_PER_RUN", 1, _positive,
        "shards of a language x shard backfill that one run (one pod) works through in turn: the per-page stages' "
        "backfill policy, fixed when the code location loads (1: a run per shard; more saves a run's start per "
        "shard when shards are many and small)",
    )  # fmt: skip
    cc_index: str = setting(
        "MELLA_CC_INDEX", "", _text,
        "root of Common Crawl's columnar index that cc_selection reads: a folder, s3://commoncrawl/ or "
        "https://data.commoncrawl.org/ (unset: cc_selection fails naming this variable)",
    )  # fmt: skip
    cc_warc_base: str = setting(
        "MELLA_CC_WARC_BASE", "https://data.commoncrawl.org/", _text,
        "where the selected records' WARC files are read by range: https://data.commoncrawl.org/, s3://commoncrawl/ "
        "or a folder (trusted operator configuration)",
    )  # fmt: skip
    cc_concurrency: int = setting("MELLA_CC_CONCURRENCY", 8, _whole, "range requests at a time in one shard run")
    cc_rate: float = setting(
        "MELLA_CC_RATE", 20.0, _number, "range requests per second of one shard run (Common Crawl answers 503 SlowDown "
        "to faster clients; the commoncrawl pool bounds how many shard runs read at once)",
    )  # fmt: skip
    # -- stage watchdog ----------------------------------------------------------------------------------------
    stage_timeout_s: float | None = setting(
        STAGE_TIMEOUT_ENV, None, _positive_seconds,
        f"deadline of every stage in seconds (unset: {DEFAULT_STAGE_TIMEOUT_S:g})",
    )  # fmt: skip
    stage_timeouts: dict[str, float] = setting(  # noqa: RUF009 (setting() is a dataclasses.field)
        STAGE_TIMEOUT_ENV + FAMILY_SUFFIX, {}, _positive_seconds,
        "deadline of one stage in seconds, e.g. MELLA_STAGE_TIMEOUT_S_IMAGES (keyed by the upper-case stage)",
    )  # fmt: skip
    # -- demo --------------------------------------------------------------------------------------------------
    demo_site_port: int = setting(
        "MELLA_DEMO_SITE_PORT", 18470, _whole, "loopback port of the demo web site (the demo's code location)"
    )

    # -- derived values ----------------------------------------------------------------------------------------
    @property
    def s3_endpoint(self) -> str | None:
        """The S3 API endpoint (``AWS_ENDPOINT_URL``, else ``AWS_ENDPOINT_URL_S3``); None for AWS itself."""
        return self.aws_endpoint_url or self.aws_endpoint_url_s3

    @property
    def s3_region(self) -> str:
        return self.aws_region or self.aws_default_region or "us-east-1"

    def stage_timeout(self, stage: str) -> tuple[float, str]:
        """(seconds, where they came from) for ``stage``: its own variable, the global one, or the default."""
        own = f"{STAGE_TIMEOUT_ENV}_{stage.upper()}"
        if stage.upper() in self.stage_timeouts:
            return self.stage_timeouts[stage.upper()], f"{own}={self.stage_timeouts[stage.upper()]:g}"
        if self.stage_timeout_s is not None:
            return self.stage_timeout_s, f"{STAGE_TIMEOUT_ENV}={self.stage_timeout_s:g}"
        return DEFAULT_STAGE_TIMEOUT_S, f"default; set {STAGE_TIMEOUT_ENV} or {own}"

    def by_env(self, env: str) -> Any:
        """The value of the setting declared for the variable ``env`` (ValueError for an undeclared name)."""
        for item in fields(self):
            if item.metadata["setting"].env == env:
                return getattr(self, item.name)
        raise ValueError(f"{env} is not a MELLA setting (mella_assets/settings.py declares them)")


SETTINGS: tuple[Setting, ...] = tuple(item.metadata["setting"] for item in fields(Settings))


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings from ``environ`` (default: this process's environment, read now); empty values count as unset.

    A value that does not parse raises ValueError naming the variable."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for item in fields(Settings):
        declared: Setting = item.metadata["setting"]
        if declared.family:
            values[item.name] = {
                name.removeprefix(declared.prefix).upper(): declared.value(raw.strip(), name)
                for name, raw in sorted(env.items())
                if name.startswith(declared.prefix) and name != declared.prefix and raw.strip()
            }
            continue
        raw = (env.get(declared.env) or "").strip()
        if raw:
            values[item.name] = declared.value(raw)
    return Settings(**values)


def variables(names: Iterable[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables ``names`` that are set (non-empty) in ``environ`` (default: this process's environment), as
    they are: for handing settings on to a child process (a training pod), not for reading them."""
    env = os.environ if environ is None else environ
    return {name: env[name] for name in names if env.get(name)}
