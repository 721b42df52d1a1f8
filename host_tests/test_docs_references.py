"""Every reference in the repository points into it: no citation of notes kept elsewhere, and
each "docs/protocol.md N.N" names a section that exists."""

import re
import subprocess

import mpyrun

ROOT = mpyrun.ROOT
PROTOCOL = ROOT / "docs" / "protocol.md"
# Names of documents that are not in the repository, as they were once cited.
OUTSIDE = re.compile(r"iothub-protocol\.md|field[- ]notes|platform-facts|/work/shared|issue \d+")
CITATION = re.compile(r"docs/protocol\.md,?\s+(?:section\s+)?(\d+(?:\.\d+)?)(?:\s*-\s*(\d+\.\d+))?")


def tracked_text_files():
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in out:
        path = ROOT / name
        if not path.is_file() or path.suffix in (".png", ".der", ".pem"):
            continue
        try:
            yield name, path.read_text()
        except UnicodeDecodeError:
            continue


def protocol_sections():
    heads = re.findall(r"^#{2,3} (\d+(?:\.\d+)?)[ .]", PROTOCOL.read_text(), re.M)
    return set(heads)


def test_no_reference_points_outside_the_repository():
    me = "host_tests/test_docs_references.py"
    found = [
        "%s:%d: %s" % (name, i + 1, line.strip())
        for name, text in tracked_text_files()
        if name != me
        for i, line in enumerate(text.splitlines())
        if OUTSIDE.search(line)
    ]
    assert not found, "\n".join(found)


def test_every_protocol_citation_names_an_existing_section():
    sections = protocol_sections()
    assert {"1", "1.3", "2.4", "3.3", "4.1", "5.2", "6.1"} <= sections  # the parser works
    bad, n = [], 0
    for name, text in tracked_text_files():
        flat = re.sub(r"\s*\n\s*#?\s*", " ", text)  # citations wrap across comment lines
        for m in CITATION.finditer(flat):
            n += 1
            for sec in m.groups():
                if sec and sec not in sections:
                    bad.append("%s: docs/protocol.md %s" % (name, sec))
    assert n >= 30, n  # the code does cite it
    assert not bad, "\n".join(bad)
