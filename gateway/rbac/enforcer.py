"""Casbin RBAC with domains (tenant = domain), loaded once at start-up.

Two things keep a decision cheap (the policy is static while the process
runs):

* With the shipped model, the matcher is evaluated by ``CompiledPolicy``
  instead of casbin's expression engine: per (role, tenant), the policy
  lines that apply (role link and domain already checked), each with its
  ``keyMatch2`` and method regexes compiled once.  A check is then one or
  two regex matches (measured: ``bench/auth_bench.py``).  Any other model
  file is evaluated by casbin itself.
* Decisions are memoised by route rule (``/functions/<name>/invoke``), not
  by raw path, so every function name and workflow id shares one entry.
  That is only done for a rule (and method) whose every path gets the same
  answer from every policy line for that method (``rule_is_generic``); for
  a rule some line could split (e.g. a line for ``/data/products`` only)
  the raw path stays the key.
"""
from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import casbin
from casbin.util import key_match
from flask import Flask, current_app, g, request

from gateway.auth.identity import current_claims
from gateway.errors import ApiError

DECISION_CACHE_SIZE = 65536
F = TypeVar("F", bound=Callable[..., Any])
_KEY_MATCH2_VARIABLE = re.compile(r"(.*?):[^/]+(.*?)")  # as casbin.util.key_match2
_REGEX_SPECIALS = set(".^$*+?()[]{}|\\")
# Flask converters whose values are single path segments, as keyMatch2's ":name" is.
_SEGMENT_CONVERTERS = {"default", "string", "int", "float", "uuid"}
_FLASK_VARIABLE = re.compile(r"^<(?:(\w+)(?:\([^)]*\))?:)?\w+>$")


def key_match2_regex(pattern: str) -> re.Pattern[str]:
    """The regex casbin's keyMatch2 builds for ``pattern`` (same steps)."""
    pattern = pattern.replace("/*", "/.*")
    pattern = _KEY_MATCH2_VARIABLE.sub(r"\g<1>[^\/]+\g<2>", pattern, 0)
    if pattern == "*":
        pattern = "(.*)"
    return re.compile("^" + pattern + "$")


class CompiledPolicy:
    """The shipped matcher, ``g(r.sub, p.sub, r.dom) && (p.dom == "*" ||
    r.dom == p.dom) && keyMatch2(r.obj, p.obj) && regexMatch(r.act, p.act)``
    with effect ``some(where (p.eft == allow))``, evaluated directly."""

    def __init__(self, enforcer: casbin.Enforcer) -> None:
        self._role_manager = enforcer.get_role_manager()
        self._lines = [(sub, dom, key_match2_regex(obj), re.compile(act))
                       for sub, dom, obj, act in enforcer.get_policy()]
        self._applicable: dict[tuple[str, str], list[tuple[re.Pattern[str], re.Pattern[str]]]] = {}

    def _lines_for(self, role: str, tenant: str) -> list[tuple[re.Pattern[str], re.Pattern[str]]]:
        lines = self._applicable.get((role, tenant))
        if lines is None:
            lines = [(obj, act) for sub, dom, obj, act in self._lines
                     if (dom == "*" or dom == tenant) and self._role_manager.has_link(role, sub, tenant)]
            if len(self._applicable) >= DECISION_CACHE_SIZE:
                self._applicable.clear()
            self._applicable[(role, tenant)] = lines
        return lines

    def enforce(self, role: str, tenant: str, path: str, method: str) -> bool:
        return any(obj.match(path) is not None and act.match(method) is not None
                   for obj, act in self._lines_for(role, tenant))


@functools.lru_cache(maxsize=1)
def _shipped_model_signature() -> tuple[str, ...]:
    return _model_signature(casbin.Enforcer(str(default_policy_files()[0])).get_model())


def _model_signature(model: Any) -> tuple[str, ...]:
    """The model's definitions and matcher as casbin parsed them: equal
    signatures mean CompiledPolicy evaluates exactly this model."""
    sections = model.model
    return tuple(str(sections[s][s].value) if s in sections and s in sections[s] else ""
                 for s in ("r", "p", "g", "e", "m"))


def _segments(path: str) -> list[str]:
    return path.split("/")


def _flask_segment_is_variable(segment: str) -> bool | None:
    """True for a one-segment variable, False for a literal, None for
    anything else (a ``path`` converter, a variable inside a segment)."""
    match = _FLASK_VARIABLE.match(segment)
    if match:
        return True if (match.group(1) or "default") in _SEGMENT_CONVERTERS else None
    return None if "<" in segment else False


def _cannot_overlap(pattern: str, rule_prefix: str) -> bool:
    """True when no path matching ``pattern`` can start with ``rule_prefix``
    (the rule's literal part before its first variable): their literal
    prefixes disagree.  The pattern's literal prefix ends one character
    before its first special character, since a quantifier may make the
    character before it optional."""
    cut = next((i for i, ch in enumerate(pattern) if ch in _REGEX_SPECIALS or ch == ":"), None)
    literal = pattern if cut is None else pattern[:max(cut - 1, 0)]
    return not (rule_prefix.startswith(literal) or literal.startswith(rule_prefix))


def rule_is_generic(rule: str, policy_objects: Iterable[str]) -> bool:
    """Whether every path of the Flask ``rule`` gets the same keyMatch2
    result from each policy object pattern: for each pattern the rule's
    paths are either all inside or all outside it.  Conservative: any
    ``*`` or regex character in a pattern, or a multi-segment variable in
    the rule, makes the rule non-generic."""
    rule_segments = _segments(rule)
    kinds = [_flask_segment_is_variable(s) for s in rule_segments]
    if None in kinds:
        return False
    if not any(kinds):
        return True  # one path only: nothing to split
    rule_prefix = rule.split("<", 1)[0]
    for pattern in policy_objects:
        if _cannot_overlap(pattern, rule_prefix):
            continue  # e.g. a /storage/v1/* line says nothing about /functions/<name>
        if set(pattern) & _REGEX_SPECIALS:
            return False  # "*", alternatives, wildcards: not analysed
        pattern_segments = _segments(pattern)
        if len(pattern_segments) != len(rule_segments):
            continue  # keyMatch2 variables never span a "/": no path of the rule matches
        for segment, rule_variable, rule_segment in zip(pattern_segments, kinds, rule_segments, strict=True):
            if segment.startswith(":"):
                continue  # a variable: contains every value of this segment
            if ":" in segment:
                return False
            if rule_variable:
                return False  # the pattern picks some values of a rule variable
            if segment != rule_segment:
                break  # literals differ: no path of the rule matches this pattern
    return True


class Authorizer:
    def __init__(self, model_path: str | Path, policy_path: str | Path) -> None:
        # pycasbin logs the whole model and policy at INFO on every load.
        logging.getLogger("casbin").setLevel(logging.WARNING)
        self._enforcer = casbin.Enforcer(str(model_path), str(policy_path))
        # A grouping rule with domain "*" applies in every tenant.
        self._enforcer.add_named_domain_matching_func("g", key_match)
        self._enforcer.build_role_links()
        self._compiled = (CompiledPolicy(self._enforcer)
                          if _model_signature(self._enforcer.get_model()) == _shipped_model_signature() else None)
        self._policy_lines = [(obj, re.compile(act)) for _, _, obj, act in self._enforcer.get_policy()]
        self._generic_rules: dict[tuple[str, str], bool] = {}
        # Plain dict operations are atomic under the GIL; a full cache is
        # simply emptied (with keys by rule it holds a few hundred entries).
        self._decisions: dict[tuple[str, str, str, str], bool] = {}

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def allowed(self, role: str, tenant: str, path: str, method: str, rule: str | None = None) -> bool:
        """The decision for ``path``, memoised by ``rule`` (the route rule
        that matched it) when that rule is generic, else by the path."""
        key = (role, tenant, self._cache_subject(path, method, rule), method)
        decision = self._decisions.get(key)
        if decision is None:
            decision = self.enforce_uncached(role, tenant, path, method)
            if len(self._decisions) >= DECISION_CACHE_SIZE:
                self._decisions.clear()
            self._decisions[key] = decision
        return decision

    def _cache_subject(self, path: str, method: str, rule: str | None) -> str:
        if rule is None:
            return "path:" + path
        generic = self._generic_rules.get((rule, method))
        if generic is None:
            # Only the lines that can allow this method can tell paths apart.
            objects = [obj for obj, act in self._policy_lines if act.match(method) is not None]
            generic = self._generic_rules[(rule, method)] = rule_is_generic(rule, objects)
        return ("rule:" + rule) if generic else ("path:" + path)

    def cached_decisions(self) -> int:
        return len(self._decisions)

    def enforce_uncached(self, role: str, tenant: str, path: str, method: str) -> bool:
        if self._compiled is not None:
            return self._compiled.enforce(role, tenant, path, method)
        return bool(self._enforcer.enforce(role, tenant, path, method))

    def enforce_with_casbin(self, role: str, tenant: str, path: str, method: str) -> bool:
        """casbin's own evaluation (the reference the compiled policy is tested against)."""
        return bool(self._enforcer.enforce(role, tenant, path, method))


def default_policy_files() -> tuple[Path, Path]:
    base = resources.files("gateway.rbac")
    return Path(str(base / "model.conf")), Path(str(base / "policy.csv"))


def authorize(fn: F) -> F:
    """Route decorator: a valid JWT (401 otherwise) whose role may call this
    path and method in the caller's tenant (403 otherwise)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        claims = current_claims()
        authorizer: Authorizer = current_app.extensions["apprun.rbac"]
        req = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup, not five
        rule = req.url_rule.rule if req.url_rule is not None else None
        if not authorizer.allowed(claims["role"], claims["tenant_id"], req.path, req.method, rule):
            raise ApiError(403, "forbidden", f"role '{claims['role']}' may not {req.method} {req.path}")
        g.apprun_authorized = True
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def init_app(app: Flask) -> None:
    settings = app.config["APPRUN_SETTINGS"]
    model, policy = default_policy_files()
    model = Path(settings.rbac_model_file) if settings.rbac_model_file else model
    policy = Path(settings.rbac_policy_file) if settings.rbac_policy_file else policy
    app.extensions["apprun.rbac"] = Authorizer(model, policy)
