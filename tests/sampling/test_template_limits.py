"""The sandbox's hard limits: a template that would hang or exhaust memory stops at once with one
line naming the template file and line; ordinary templates render as before."""
from __future__ import annotations

import threading

import pytest

from generator.errors import UserError
from generator.sampling import sandbox
from generator.sampling.templates import load_template, render_source

VARS = {"topic": "entropy", "topics": ["heat", "light"]}
LIMIT = r"the template went past the sandbox's limits: "


@pytest.mark.timeout(20)
@pytest.mark.parametrize("body, match", [
    # the hostile round's hangs: a huge power, nested ranges
    ("{{ 9**(9**9) }}", r"'\*\*' makes an integer of about \d+ bits \(the limit is 4096\)"),
    ("{% for i in range(99999) %}{{ i }}{% endfor %}", r"range\(\) of 99999 numbers \(the limit is 10000\)"),
    ("{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}",
     r"more than 1000000 loop steps"),
    ("{% set s = 'x' * 100000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
     r"more than 1000000 loop steps"),
    ("{{ (10**1000) * (10**1000) }}", r"'\*' makes an integer of more than 4096 bits"),
    # values that would fill memory before any loop could notice
    ("{{ 'x' * 10**9 }}", r"'\*' repeats a value to 1000000000 characters"),
    ("{{ [1, 2] * 10**8 }}", r"'\*' repeats a value to 200000000"),
    ("{{ '%999999999d' % 1 }}", r"'%' formats with a width or precision above 9999"),
    ("{{ '%*d' % (999999999, 1) }}", r"'%' formats with a width"),
    ("{{ '{:>999999999}'.format(1) }}", r"format\(\) with a width or precision above 9999"),
    ("{{ '%999999d' | format(1) }}", r"the format filter with a width"),
    ("{{ topic | center(999999999) }}", r"the center filter\(999999999\): sizes and counts may be at most 10000"),
    ("{{ topic.ljust(999999999) }}", r"ljust\(999999999\): sizes and counts"),
    ("{{ ('x' * 1000).replace('', 'y' * 10000) }}", r"replace\(\) makes a text of more than 2000000"),
    ("{{ ('x' * 100000).join('y' * 100000) }}", r"join\(\) makes a text of more than 2000000"),
    ("{{ lipsum(999999) }}", r"lipsum\(\) of more than 100 paragraphs"),
    # doubling a text: through a namespace in a loop, through macro recursion
    ("{% set ns = namespace(x='ab') %}{% for i in range(60) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
     r"setting x makes a value of 2097152 characters"),
    ("{% macro f(s, n) %}{{ f(s ~ s, n - 1) if n else s }}{% endmacro %}{{ f('ab', 60) }}",
     r"an argument makes a value of 2097152 characters"),
    ("{% for i in range(30) %}{{ 'x' * 100000 }}{% endfor %}", r"writes more than 2000000 characters"),
])
def test_hostile_templates_stop_with_one_line_naming_the_line(body, match, monkeypatch):
    monkeypatch.setattr(sandbox, "time", StoppedClock())  # the size and step limits, whatever the load
    with pytest.raises(UserError, match=LIMIT + match) as info:
        render_source("\n" + body, VARS, where="t.j2")
    message = str(info.value)
    assert message.startswith("t.j2:2: ") and "\n" not in message and "(fix: " in message


class FakeClock:
    """time.monotonic that advances a second at each reading."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now


def test_a_render_stops_after_its_time_limit_in_any_thread(monkeypatch):
    monkeypatch.setattr(sandbox, "time", FakeClock())
    body = "{# variables: [topic] #}\n{% for i in range(10) %}{{ topic }}{% endfor %}"
    errors: list[Exception] = []

    def render():
        try:
            render_source(body, VARS, where="t.j2")
        except UserError as exc:
            errors.append(exc)

    render()
    worker = threading.Thread(target=render)  # no signals: the limit holds off the main thread too
    worker.start()
    worker.join(timeout=20)
    assert len(errors) == 2
    for exc in errors:
        assert str(exc).startswith("t.j2:2: " + "the template went past the sandbox's limits: took longer than 2 s")


class StoppedClock:
    """time.monotonic that moves only when the test moves it."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def test_renders_in_a_time_budget_share_it(monkeypatch):
    """IN5: loading a recipe rendered a template just under the per-render limit once per probe
    cell (minutes); the probe's renders now share one budget and the refusal gives the pace."""
    clock = StoppedClock()
    monkeypatch.setattr(sandbox, "time", clock)
    with sandbox.time_budget(2.0):
        for _ in range(2):
            assert render_source("{{ topic }}", VARS) == "entropy"
            clock.now += 1.5  # each render "took" 1.5 s, under the 2 s a render may take
        with pytest.raises(UserError, match=LIMIT + r"renders too slowly for a corpus \(0.75 s per render: 2 "
                                                    r"render\(s\) and the next used up the 2 s that checking"):
            render_source("{{ topic }}", VARS, where="t.j2")
    assert render_source("{{ topic }}", VARS) == "entropy"  # outside the budget: the render's own limit only


def test_each_render_has_its_own_budget(monkeypatch):
    monkeypatch.setattr(sandbox, "time", StoppedClock())  # the step budget, whatever the load
    body = "{% for i in range(1000) %}{% for j in range(600) %}{% endfor %}{% endfor %}done"
    assert render_source(body, VARS) == "done"  # 601,000 steps
    assert render_source(body, VARS) == "done"  # the same again: budgets do not add up


def test_ordinary_templates_still_render():
    body = ("{% for t in topics %}{{ loop.index }}/{{ loop.length }} {{ t | title }}{{ ',' if not loop.last }} "
            "{% endfor %}{% set ns = namespace(n=0) %}{% for i in range(5) %}{% set ns.n = ns.n + i %}{% endfor %}"
            "{{ ns.n }} {{ 2 ** 10 }} {{ 'ab' * 2 }} {{ '%.2f' % 3.14159 }} {{ '{:,}'.format(1234567) }} "
            "{{ topic | center(12) | trim }} {% for x in [1, [2, 3]] recursive %}"
            "{{ loop(x) if x is iterable else x }}{% endfor %}")
    assert render_source(body, VARS) == "1/2 Heat, 2/2 Light 10 1024 abab 3.14 1,234,567 entropy 123"


@pytest.mark.parametrize("body, match", [
    ("{{ topic.__class__ }}", r"t.j2:1: the sandbox refused an unsafe operation \(access to attribute '__class__'"),
    ("{{ topic.__nothing__ }}", r"t.j2:1: the sandbox blocks attribute '__nothing__' \(no attribute starting with '_'"
                                r".*\(fix: use the variable itself with filters"),
    ("{{ topic.colour }}", r"t.j2:1: 'str object' has no attribute 'colour' \(fix: use the variable itself"),
    ("{{ mood }}", r"t.j2:1: 'mood' is undefined \(fix: declare the variable"),
])
def test_missing_and_blocked_attributes_say_which(body, match):
    with pytest.raises(UserError, match=match):
        render_source(body, VARS, where="t.j2")


@pytest.mark.parametrize("header, match", [
    ("variables: [topics]\nnum_topics: 100000000", r"t.j2: num_topics must be a positive integer of at most 20, "
                                                   r"got '100000000'"),
    ("variables: [topics]\nnum_topics: true", r"num_topics must be a positive integer of at most 20, got 'True'"),
    ("variables: [topics]\nnum_topics: three", r"num_topics must be a positive integer of at most 20, got 'three'"),
    ("variables: [topics]\nvariables: [topics]", r"t.j2:3: duplicate key 'variables' \(first given on line 2\)"),
    ("variables: &a [topics]\nx: [" + ", ".join(["*a"] * 20000) + "]", r"t.j2:3: aliases stand for more than"),
])
def test_bad_template_headers_name_the_line(tmp_path, header, match):
    path = tmp_path / "t.j2"
    path.write_text("{#\n" + header + "\n#}\n{{ topics | join(', ') }}")
    with pytest.raises(UserError, match=match):
        load_template(path)


def test_twenty_topics_is_the_most(tmp_path):
    path = tmp_path / "t.j2"
    path.write_text("{#\nvariables: [topics]\nnum_topics: 20\n#}\n{{ topics | join(', ') }}")
    assert load_template(path).num_topics == 20
