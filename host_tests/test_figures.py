"""README figures are generated: every block between <!-- figures:NAME --> markers in the
README must equal the same block of docs/figures.md, which the benchmarks write
(tools/bench/figures.py). Also the mechanism itself: splicing, broken markers, a bench
rewriting its block in place."""

import subprocess
import sys

import pytest

import mpyrun

sys.path.insert(0, str(mpyrun.ROOT / "tools" / "bench"))
import figures  # noqa: E402

FIGS = mpyrun.ROOT / "docs" / "figures.md"
README = mpyrun.ROOT / "README.md"


def test_readme_blocks_equal_docs_figures():
    problems = figures.compare(FIGS.read_text(), README.read_text())
    assert not problems, "\n".join(problems)


def test_the_readme_embeds_the_benchmark_blocks():
    # The benches the README quotes: each must be embedded, so a table cannot fall back to
    # being copied by hand.
    names = set(figures.blocks(README.read_text(), "README.md"))
    for name in (
        "handshake",
        "client-wire",
        "client-heap",
        "provisioning",
        "storm",
        "aio",
        "lifecycle",
    ):
        assert name in names


def test_check_cli_fails_on_a_hand_edited_figure(tmp_path):
    readme = README.read_text()
    block = figures.blocks(readme, "README.md")["handshake"]
    edited = readme.replace(block, block.replace("|", "| 1", 1), 1)
    assert edited != readme
    p = tmp_path / "README.md"
    p.write_text(edited)
    cmd = [sys.executable, str(mpyrun.ROOT / "tools/bench/figures.py"), "--readme", str(p)]
    proc = subprocess.run(cmd + ["--check"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "README block 'handshake' differs" in proc.stderr
    proc = subprocess.run(cmd + ["--update-readme"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert p.read_text() == readme


def test_write_block_appends_then_replaces_in_place(tmp_path):
    f = tmp_path / "figures.md"
    figures.write_block(f, "alpha", "| a |\n|---|\n| 1 |\n", "`bench_a.py` run 1")
    figures.write_block(f, "beta", "b 1\n", "`bench_b.py` run 1")
    figures.write_block(f, "alpha", "| a |\n|---|\n| 2 |\n", "`bench_a.py` run 2")
    text = f.read_text()
    assert figures.blocks(text) == {"alpha": "| a |\n|---|\n| 2 |\n", "beta": "b 1\n"}
    assert "Source: `bench_a.py` run 2.\n<!-- figures:alpha -->" in text
    assert "run 1" in text and text.count("run 1") == 1  # beta's source stays, alpha's went
    assert text.index("figures:alpha") < text.index("figures:beta")  # order kept


def test_update_readme_splices_only_the_blocks():
    figs = "<!-- figures:x -->\nnew x\n<!-- /figures:x -->\n<!-- figures:y -->\ny\n<!-- /figures:y -->\n"
    readme = "intro\n<!-- figures:x -->\nold x\nold x2\n<!-- /figures:x -->\ntail\n"
    assert figures.update_readme(figs, readme) == (
        "intro\n<!-- figures:x -->\nnew x\n<!-- /figures:x -->\ntail\n"
    )
    # y is not embedded: that is reported, not silently ignored
    assert figures.compare(figs, figures.update_readme(figs, readme)) == [
        "docs/figures.md block 'y' is not embedded in the README "
        "(add <!-- figures:y --> and <!-- /figures:y --> where it belongs)"
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("<!-- figures:a -->\nx\n", "block 'a' is never closed"),
        ("x\n<!-- /figures:a -->\n", "closing marker of 'a' without its opening marker"),
        (
            "<!-- figures:a -->\n<!-- figures:b -->\n<!-- /figures:b -->\n<!-- /figures:a -->\n",
            "block 'b' opens inside block 'a'",
        ),
        (
            "<!-- figures:a -->\n<!-- /figures:a -->\n<!-- figures:a -->\n<!-- /figures:a -->\n",
            "block 'a' appears twice",
        ),
    ],
)
def test_broken_markers_are_named(text, message):
    with pytest.raises(figures.FiguresError, match=message):
        figures.blocks(text, "README.md")


def test_a_readme_block_missing_from_the_figures_file_is_refused():
    with pytest.raises(figures.FiguresError, match="README block z is not in docs/figures.md"):
        figures.update_readme("", "<!-- figures:z -->\n<!-- /figures:z -->\n")
