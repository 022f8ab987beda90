"""gateway/http_handler.parse_header_block builds the same headers as the
email parser pywsgi used (for lines read_header_block accepts), and refuses
a bare CR inside a line, which that parser split into two headers."""
from __future__ import annotations

import email.parser

import pytest
from gevent.pywsgi import OldMessage

from gateway.http_handler import RequestRejected, parse_header_block

BLOCKS = [
    b"Host: a\r\nX-A:   b c \r\nAuthorization: Bearer x.y.z\r\nX-Empty:\r\nX-Tab:\tv\r\n",
    b"A: 1\nB: 2\n",
    b"",
    b"Cookie: a=b; c=d\r\nCookie: e\r\nPrefer: count=exact\r\nPrefer: return=minimal\r\n",
    b"X: \xe9\xff\r\n",
    b"X: a:b:c\r\n",
]


@pytest.mark.parametrize("block", BLOCKS)
def test_headers_match_the_email_parser(block: bytes) -> None:
    reference = email.parser.Parser(_class=OldMessage).parsestr(block.decode("iso-8859-1"))
    parsed = parse_header_block(block)
    assert parsed.items() == reference.items()
    assert isinstance(parsed, OldMessage)


def test_a_bare_cr_inside_a_header_line_is_refused() -> None:
    with pytest.raises(RequestRejected) as refused:
        parse_header_block(b"X-A: a\rContent-Length: 5\r\n")
    assert refused.value.status == 400
