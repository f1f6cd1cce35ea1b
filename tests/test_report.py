"""The report's captions are valid reStructuredText: docutils reports nothing at warning level or above
(Snakemake's report would show such a message as an error box, e.g. ``|cos|`` read as a substitution)."""
from pathlib import Path

import docutils.core
import docutils.utils
import pytest

CAPTIONS = sorted((Path(__file__).resolve().parents[1] / "workflow/report").glob("*.rst"))


def render(text: str) -> None:
    docutils.core.publish_string(text, writer_name="html",
                                 settings_overrides={"halt_level": 2, "report_level": 2, "warning_stream": False})


@pytest.mark.parametrize("caption", CAPTIONS, ids=lambda p: p.name)
def test_caption_renders_cleanly(caption):
    render(caption.read_text())


def test_the_check_catches_an_undefined_substitution():
    assert len(CAPTIONS) >= 7
    with pytest.raises(docutils.utils.SystemMessage, match="Undefined substitution"):
        render("the |cos| of two vectors")
