"""Model settings are validated before anything loads them (issue #8): a clear error for a missing folder, a
file, a folder outside the allowed roots (symbolic links followed), and a value that is not a hub id."""

from __future__ import annotations

import pytest

from mella_assets.lib.model_paths import ModelReferenceError, allowed_model_roots, check_model_reference
from mella_assets.resources.lake import Lake


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "models" / "tiny-captioner"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def test_an_existing_folder_is_accepted_and_resolved(model_dir, monkeypatch):
    monkeypatch.chdir(model_dir.parent)
    assert check_model_reference(str(model_dir)) == str(model_dir)
    assert check_model_reference("./tiny-captioner") == str(model_dir)
    assert check_model_reference(model_dir.as_uri()) == str(model_dir)


@pytest.mark.parametrize("model", ["Qwen/Qwen2-VL-2B-Instruct", "facebook/nllb-200-distilled-600M", "gpt2"])
def test_a_hub_id_passes_unchanged(model):
    assert check_model_reference(model) == model


def test_a_lake_reference_is_left_to_the_lake():
    assert check_model_reference("lake://models/tiny/captioner") == "lake://models/tiny/captioner"
    with pytest.raises(ValueError, match="unsafe lake key"):
        Lake(root="/tmp/unused-lake").resolve_model("lake://../../etc")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("", "no model given"),
        ("   ", "no model given"),
        ("/nonexistent/mella/model", "does not exist"),
        ("file:///nonexistent/mella/model", "does not exist"),
        ("~/nonexistent-mella-model", "does not exist"),
        ("models/../../nonexistent", "does not exist"),
        ("C:\\models\\x", "does not exist"),
        ("bad id with spaces", "neither an existing folder nor a hub id"),
        ("org--name/model", "neither an existing folder nor a hub id"),
        ("-org/model", "neither an existing folder nor a hub id"),
        ("org/model.", "neither an existing folder nor a hub id"),
        ("org/" + "m" * 97, "neither an existing folder nor a hub id"),
        ("http://evil.example/model", "does not exist"),
    ],
)
def test_a_model_setting_that_names_nothing_loadable_gives_a_clear_error(model, message):
    with pytest.raises(ModelReferenceError, match=message):
        check_model_reference(model)


def test_a_file_is_not_a_model_folder(model_dir):
    with pytest.raises(ModelReferenceError, match="is not a folder"):
        check_model_reference(str(model_dir / "config.json"))


def test_a_folder_outside_the_allowed_roots_is_refused_also_through_a_symlink(tmp_path, model_dir, monkeypatch):
    allowed, elsewhere = tmp_path / "allowed", tmp_path / "elsewhere"
    allowed.mkdir()
    (elsewhere / "model").mkdir(parents=True)
    (allowed / "link").symlink_to(elsewhere / "model", target_is_directory=True)
    (allowed / "inside").mkdir()
    monkeypatch.setenv("MELLA_MODEL_ROOTS", f"{allowed}:{tmp_path / 'also-allowed'}")
    assert allowed_model_roots() == [allowed, tmp_path / "also-allowed"]
    assert check_model_reference(str(allowed / "inside")) == str(allowed / "inside")
    for outside in (model_dir, allowed / "link", allowed / ".." / "elsewhere" / "model"):
        with pytest.raises(ModelReferenceError, match="is outside MELLA_MODEL_ROOTS"):
            check_model_reference(str(outside))


def test_the_lake_resource_refuses_a_missing_model_folder_before_loading():
    with pytest.raises(ModelReferenceError, match="does not exist"):
        Lake(root="/tmp/unused-lake").resolve_model("/nonexistent/mella/model")
