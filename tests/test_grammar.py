"""The PostgREST grammar parser, without a database."""
from __future__ import annotations

import pytest

from gateway.data.grammar import Condition, GrammarLimits, Logic, OrderTerm, parse_query
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


def test_full_text_operators_with_and_without_language() -> None:
    query = parse_query([("name", "fts.fox"), ("name", "not.wfts(english).brown -dog"),
                         ("or", "(name.phfts(pg_catalog.simple).a b,name.plfts.c)")])
    assert query.where.items[0] == Condition("name", "fts", "fox")
    assert query.where.items[1] == Condition("name", "wfts", "brown -dog", negated=True, language="english")
    tree = query.where.items[2]
    assert tree.items == (Condition("name", "phfts", "a b", language="pg_catalog.simple"),
                          Condition("name", "plfts", "c"))


def test_columns_and_on_conflict_take_plain_or_quoted_names() -> None:
    query = parse_query([("columns", '"name","price"'), ("on_conflict", "id")])
    assert query.columns == ("name", "price") and query.on_conflict == ("id",)
    assert parse_query([("columns", "name,price")]).columns == ("name", "price")


def test_limits_are_configurable() -> None:
    limits = GrammarLimits(max_logic_depth=2, max_select_items=2)
    parse_query([("or", "(a.eq.1,and(b.eq.2,c.eq.3))"), ("select", "a,b")], limits)
    for args in ([("or", "(a.eq.1,and(b.eq.2,or(c.eq.3,d.eq.4)))")], [("select", "a,b,c")]):
        with pytest.raises(ApiError) as caught:
            parse_query(args, limits)
        assert caught.value.status == 400 and caught.value.hint


@pytest.mark.parametrize("args", [
    [("limit", "\u00b2")], [("offset", "\u0663")], [("limit", "1" * 19)],
    [("price", "eq.1\x00")], [("or", "(price.eq.\x00)")], [("sel\x00ect", "*")],
    [("price", "fts(Bad-Lang).x")], [("price", "fts().x")],
    [("columns", "a,a")], [("columns", "a,,b")], [("on_conflict", "")],
])
def test_hostile_or_malformed_parameters_are_400(args) -> None:
    with pytest.raises(ApiError) as caught:
        parse_query(args)
    assert caught.value.status == 400 and caught.value.code == "PGRST100"


def test_deep_nesting_is_refused_without_recursion_error() -> None:
    value = "(" + "or(" * 5000 + "a.eq.1" + ")" * 5000 + ")"
    with pytest.raises(ApiError) as caught:
        parse_query([("or", value)])
    assert caught.value.status == 400
