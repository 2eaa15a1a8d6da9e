"""Pure download decisions: what a response means for the partial file we hold."""

from __future__ import annotations

import pytest

from node.content.download import (
    LENGTH_MISMATCH,
    ContentRange,
    decide_response,
    full_jitter,
    parse_content_range,
)

N = 1000


@pytest.mark.parametrize("value, expected", [
    ("bytes 10-999/1000", ContentRange(10, 999, 1000)),
    ("bytes 0-0/*", ContentRange(0, 0, None)),
    ("bytes 10-5/1000", None),
    ("bytes */1000", None),
    ("items 0-1/2", None),
    ("bytes 1-2/3, bytes 4-5/6", None),
    (None, None),
])
def test_content_range_parsing(value, expected):
    assert parse_content_range(value) == expected


def test_full_response_to_a_range_request_means_start_over():
    d = decide_response(200, {"Content-Length": str(N)}, 400, N)
    assert (d.action, d.start, d.discard_partial) == ("stream", 0, True)


def test_server_declaring_another_length_is_rejected_before_any_byte():
    assert decide_response(200, {"Content-Length": str(N + 1)}, 0, N).reason == LENGTH_MISMATCH
    assert decide_response(206, {"Content-Range": f"bytes 400-{N}/{N + 1}"}, 400, N).reason == LENGTH_MISMATCH


def test_partial_response_must_continue_exactly_where_we_stopped():
    good = decide_response(206, {"Content-Range": f"bytes 400-{N - 1}/{N}", "Content-Length": "600"}, 400, N)
    assert (good.action, good.start, good.body_length) == ("stream", 400, 600)
    shifted = decide_response(206, {"Content-Range": f"bytes 0-{N - 1}/{N}"}, 400, N)
    assert (shifted.action, shifted.discard_partial) == ("retry", True)
    lying_length = decide_response(206, {"Content-Range": f"bytes 400-{N - 1}/{N}", "Content-Length": "9"},
                                   400, N)
    assert lying_length.action == "retry"
    multipart = decide_response(206, {"Content-Range": f"bytes 400-{N - 1}/{N}",
                                      "Content-Type": "multipart/byteranges; boundary=x"}, 400, N)
    assert multipart.action == "retry"


@pytest.mark.parametrize("status, action", [(301, "redirect"), (308, "redirect"), (503, "retry"),
                                            (429, "retry"), (416, "retry"), (404, "give_up"),
                                            (403, "give_up")])
def test_status_codes(status, action):
    assert decide_response(status, {"Location": "/x"}, 0, N).action == action


def test_full_jitter_stays_under_the_exponential_cap():
    assert full_jitter(1, rng=lambda: 0.999) < 1.0
    assert full_jitter(4, rng=lambda: 0.999) == pytest.approx(8 * 0.999)
    assert full_jitter(40, rng=lambda: 1.0, cap=60) == 60
    assert full_jitter(3, rng=lambda: 0.0) == 0
