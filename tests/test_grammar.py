"""The PostgREST grammar parser, without a database."""
from __future__ import annotations

import pytest

from gateway.data.grammar import Condition, Logic, OrderTerm, parse_query
from gateway.errors import ApiError


def test_filters_and_negation() -> None:
    query = parse_query([("price", "gt.10"), ("name", "not.like.A*"), ("id", "in.(1,2,\"3,4\")")])
    assert query.where.items == (
        Condition("price", "gt", "10"),
        Condition("name", "like", "A*", negated=True),
        Condition("id", "in", ("1", "2", "3,4")),
    )


def test_logic_tree_nested() -> None:
    query = parse_query([("or", "(price.lt.5,and(name.eq.A,price.gte.100),not.and(a.is.null,b.eq.x))")])
    tree = query.where.items[0]
    assert isinstance(tree, Logic) and tree.operator == "or"
    assert tree.items[0] == Condition("price", "lt", "5")
    assert tree.items[1] == Logic("and", (Condition("name", "eq", "A"), Condition("price", "gte", "100")))
    assert tree.items[2].negated and tree.items[2].operator == "and"


def test_order_limit_offset_select() -> None:
    query = parse_query([("order", "price.desc.nullslast,name"), ("limit", "5"), ("offset", "10"),
                         ("select", "id,cost:price")])
    assert query.order == [OrderTerm("price", True, "last"), OrderTerm("name")]
    assert (query.limit, query.offset) == (5, 10)
    assert [(s.column, s.alias) for s in query.select] == [("id", None), ("price", "cost")]


@pytest.mark.parametrize("args", [
    [("price", "between.1.2")],      # unknown operator
    [("price", "10")],               # no operator
    [("limit", "-1")],
    [("offset", "x")],
    [("order", "price.sideways")],
    [("or", "price.eq.1")],          # logic tree without parentheses
    [("or", "(price.eq.1")],
    [("id", "in.1,2")],
    [("flag", "is.maybe")],
    [("select", "items(*)")],
])
def test_malformed_queries_are_400(args) -> None:
    with pytest.raises(ApiError) as caught:
        parse_query(args)
    assert caught.value.status == 400 and caught.value.code == "PGRST100"
