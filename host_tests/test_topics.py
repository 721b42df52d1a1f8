"""Topics, user names and property bags: the same cases on CPython and the unix port."""

import urllib.parse

import corerun

from iothub import topics

corerun.install("cases_topics", globals())


def test_property_bag_matches_python_sdk_encoding():
    # azure-iot-device encodes names and values with urllib.parse.quote(safe="").
    props = {"a b": "c&d", "\u00fc": "%", "k": "v/w"}
    want = "&".join(
        urllib.parse.quote(k, safe="") + "=" + urllib.parse.quote(v, safe="")
        for k, v in sorted(props.items())
    )
    assert topics.encode_property_bag(props) == want
