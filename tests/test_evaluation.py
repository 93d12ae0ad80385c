"""Scoring three models on the same items: intervals, paired deltas, the regression rule and the report table."""

import polars as pl
import pytest

from mella_assets.evaluation.report import report_table, scores_markdown
from mella_assets.evaluation.scoring import regressions, score_samples
from mella_assets.languages import REGISTRY

CS = REGISTRY["cs"]
REFERENCES = ["Pražský hrad v zimě", "Karlův most v noci", "Staroměstské náměstí", "Vltava a hrad"] * 3


def samples(outputs: dict[str, list[str]]) -> pl.DataFrame:
    frames = []
    for model, answers in outputs.items():
        frames.append(
            pl.DataFrame(
                {
                    "id": [f"{i:02d}" for i in range(len(REFERENCES))],
                    "source": ["know"] * 6 + ["ling"] * 6,
                    "reference": REFERENCES,
                    "output": answers,
                    "model": model,
                    "model_version": f"{model}-v",
                }
            )
        )
    return pl.concat(frames)


def test_a_checkpoint_worse_than_the_previous_on_every_item_is_a_regression():
    scored, scores = score_samples(
        samples({"base": [""] * 12, "previous": REFERENCES, "finetuned": ["nic"] * 12}), CS, n_resamples=200
    )
    current = scores.filter(pl.col("model") == "finetuned")
    assert set(current["compared_to"]) == {"previous"}
    keyword = current.filter(pl.col("metric") == "keyword_accuracy").row(0, named=True)
    # previous found every keyword (1.0), the new one none (0.0): delta −1 with a degenerate interval.
    assert (keyword["value"], keyword["delta"], keyword["delta_ci_high"]) == (0.0, -1.0, -1.0)
    assert sorted(regressions(scores)["metric"]) == ["chrf", "keyword_accuracy", "meteor"]
    assert scored.height == 36 and scored.filter(pl.col("source") == "ling")["chrf"].null_count() == 0


def test_an_unchanged_checkpoint_is_no_regression_and_the_report_shows_all_three_models():
    _, scores = score_samples(
        samples({"base": [""] * 12, "previous": REFERENCES, "finetuned": REFERENCES}), CS, n_resamples=200
    )
    assert regressions(scores).is_empty()
    table = report_table(scores)
    assert table["metric"].to_list() == ["keyword_accuracy", "meteor", "chrf"]
    row = table.row(0, named=True)
    assert (row["base"], row["previous"], row["current"], row["delta"], row["delta_vs"]) == (
        0.0,
        1.0,
        1.0,
        0.0,
        "previous",
    )
    assert "| cs | keyword_accuracy | 0.000 | 1.000 | 1.000 | +0.000 vs previous |" in scores_markdown(scores)


def test_without_a_previous_checkpoint_the_delta_is_against_the_base_model():
    _, scores = score_samples(samples({"base": [""] * 12, "finetuned": REFERENCES}), CS, n_resamples=50)
    current = scores.filter((pl.col("model") == "finetuned") & (pl.col("metric") == "meteor")).row(0, named=True)
    assert current["compared_to"] == "base"
    assert current["delta"] == pytest.approx(current["value"])
    assert regressions(scores).is_empty()


def test_the_chart_is_a_png_embedded_in_markdown_as_a_data_uri():
    import base64
    import io

    from PIL import Image

    from mella_assets.evaluation.report import chart_markdown, render_score_chart

    _, scores = score_samples(
        samples({"base": [""] * 12, "previous": REFERENCES, "finetuned": REFERENCES}), CS, n_resamples=50
    )
    png = render_score_chart(scores)
    image = Image.open(io.BytesIO(png))
    # One panel per metric: taller than wide for three metrics of one language.
    assert image.format == "PNG" and image.height > image.width / 2
    markdown = chart_markdown(png)
    assert markdown.startswith("![evaluation chart](data:image/png;base64,")
    assert base64.b64decode(markdown.split(",", 1)[1].rstrip(")")) == png
    assert Image.open(io.BytesIO(render_score_chart(scores.head(0)))).format == "PNG"  # no scores yet: a notice
