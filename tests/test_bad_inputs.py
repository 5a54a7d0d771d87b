"""The bad-input catalogue: every malformed input exits with code 2 and one line that names the
file or key and the fix, prints no traceback, and writes nothing to the output folder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SMALL_RECIPE, write_recipe
from generator.cli import main


def recipe_case(body: str):
    def make(tmp: Path) -> list[str]:
        return ["run", str(write_recipe(tmp, body)), "--out", str(tmp / "out")]
    return make


def replaced(old: str, new: str):
    assert old in SMALL_RECIPE, old
    return recipe_case(SMALL_RECIPE.replace(old, new))


def grid_case(text: str | bytes):
    def make(tmp: Path) -> list[str]:
        grid = tmp / "bad_grid.yaml"
        grid.write_bytes(text if isinstance(text, bytes) else text.encode())
        body = SMALL_RECIPE.replace("@ROOT@/topics/personas.yaml", str(grid)).replace("roots: [@ROOT@]",
                                                                                     f"roots: [@ROOT@, {tmp}]")
        return ["run", str(write_recipe(tmp, body)), "--out", str(tmp / "out")]
    return make


def template_case(text: str):
    def make(tmp: Path) -> list[str]:
        tpl = tmp / "bad.j2"
        tpl.write_text(text)
        body = SMALL_RECIPE.replace("@ROOT@/prompts/textbook.j2", str(tpl)).replace("roots: [@ROOT@]",
                                                                                   f"roots: [@ROOT@, {tmp}]")
        return ["run", str(write_recipe(tmp, body)), "--out", str(tmp / "out")]
    return make


def data_case(name: str, content: bytes | str, *extra: str, command: str = "score"):
    def make(tmp: Path) -> list[str]:
        path = tmp / name
        if content is not None:
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return [command, str(path), *extra]
    return make


def reference_case(content: bytes | str | None, recipe_tail: str):
    """A recipe with a reference corpus (tmp/real.jsonl holding `content`; None: no file)."""
    def make(tmp: Path) -> list[str]:
        if content is not None:
            (tmp / "real.jsonl").write_bytes(content if isinstance(content, bytes) else content.encode())
        return ["run", str(write_recipe(tmp, SMALL_RECIPE + recipe_tail)), "--out", str(tmp / "out")]
    return make


def seed_doc_case(field: str):
    """A recipe whose template rewrites seed documents read from tmp/seeds.jsonl by `field`."""
    def make(tmp: Path) -> list[str]:
        (tmp / "seeds.jsonl").write_text("".join(json.dumps({"text": f"A real document number {i}."}) + "\n"
                                                 for i in range(3)))
        body = SMALL_RECIPE.replace("grid:\n", f"grid:\n  seed_doc: {{path: seeds.jsonl, text_field: {field}}}\n")
        return ["run", str(write_recipe(tmp, body)), "--out", str(tmp / "out")]
    return make


def quality_case(section: str):
    """SMALL_RECIPE with the `quality:` section `section` (YAML flow mapping)."""
    return recipe_case(SMALL_RECIPE + f"quality: {section}\n")


FIRST_PERSONA = "a retired merchant-navy engineer who restores mechanical clocks"  # topics/personas.yaml
REAL = "".join(json.dumps({"text": f"real document {i}"}) + "\n" for i in range(40))
REAL_FEW = "".join(json.dumps({"text": f"real document {i}"}) + "\n" for i in range(8))


def export_case(*mix: str):
    def make(tmp: Path) -> list[str]:
        from fakes import FakeBackend
        from generator.run import controller
        from generator.recipe import load_recipe
        run = tmp / "run"
        controller.run(load_recipe(write_recipe(tmp, SMALL_RECIPE, name="source.yaml")), run, FakeBackend())
        return ["export", str(run), "--to", "datatrove", "--out", str(tmp / "out"), *mix]
    return make


def export_mix_case(mix: str):
    def make(tmp: Path) -> list[str]:
        (tmp / "real.jsonl").write_text(json.dumps({"text": "hello there"}) + "\n")
        args = export_case()(tmp)
        return [*args, "--mix", mix.replace("@TMP@", str(tmp))]
    return make


def set_case(*pairs: str, command: str = "run"):
    """`run` (or `render`) of the small recipe with `--set PAIR` for each pair."""
    def make(tmp: Path) -> list[str]:
        recipe = str(write_recipe(tmp, SMALL_RECIPE))
        out = ["--out", str(tmp / "out")] if command == "run" else []
        return [command, recipe, *out, *(a for p in pairs for a in ("--set", p))]
    return make


def num_topics_case(tmp: Path) -> list[str]:
    """A template asking for 4 topics per document over a topic axis of 3."""
    (tmp / "topics3.yaml").write_text("axis: topic\ndomains:\n  - name: Physics\n    topics: [light, heat, sound]\n")
    (tmp / "multi.j2").write_text("{#\nvariables: [topics]\nnum_topics: 4\n#}\nWrite about {{ topics | join(', ') }}.")
    body = (f"name: multi\nroots: [{tmp}]\ngrid:\n  topic: {tmp}/topics3.yaml\ntemplates:\n  - path: {tmp}/multi.j2\n"
            "size: {num_docs: 20}\nscoring: {enabled: false}\n")
    return ["run", str(write_recipe(tmp, body)), "--out", str(tmp / "out")]


def two_corpora_case(tmp: Path) -> list[str]:
    """`score A B` where A holds 40 documents and B only 3 (fewer than K = 10)."""
    (tmp / "a.jsonl").write_text(REAL)
    (tmp / "b.jsonl").write_text("".join(REAL.splitlines(True)[:3]))
    return ["score", str(tmp / "a.jsonl"), str(tmp / "b.jsonl")]


def out_path_case(make_out):
    """`run` of the small recipe with --out at `make_out(tmp)` (which may create a file first)."""
    def make(tmp: Path) -> list[str]:
        return ["run", str(write_recipe(tmp, SMALL_RECIPE)), "--out", str(make_out(tmp))]
    return make


def a_file(tmp: Path, name: str = "afile") -> Path:
    (tmp / name).write_text("not a folder\n")
    return tmp / name


CASES = {
    # recipes: YAML, keys, types, values
    "yaml syntax": (recipe_case("name: [unclosed\n"), "invalid YAML"),
    "not a mapping": (recipe_case("- a\n- b\n"), "must be a mapping"),
    "unknown top-level key": (recipe_case(SMALL_RECIPE + "colour: blue\n"), "unknown key 'colour'"),
    "unknown nested key": (replaced("sampling: {", "sampling: {colour: 1, "), "unknown key 'colour'"),
    "missing name": (replaced("name: small\n", ""), "missing required key 'name'"),
    "num_docs not an int": (replaced("num_docs: 20", "num_docs: many"), "expected int"),
    "num_docs zero": (replaced("num_docs: 20", "num_docs: 0"), "num_docs must be positive"),
    "num_docs negative": (replaced("num_docs: 20", "num_docs: -3"), "num_docs must be positive"),
    "temperature a string": (replaced("temperature: 0.7", "temperature: hot"), "expected float"),
    "top_p above 1": (replaced("top_p: 0.9", "top_p: 1.5"), r"top_p must be in"),
    "max_tokens zero": (replaced("max_tokens: 32", "max_tokens: 0"), "max_tokens must be positive"),
    "unknown backend": (replaced("backend: ray", "backend: tpu"), "'tpu' is not allowed"),
    "openai without url": (replaced("backend: ray", "backend: openai"), "base_url"),
    "unknown model alias": (recipe_case(SMALL_RECIPE + "model: embedded:gpt-17\n"), "not a known embedded model"),
    "grid not a mapping": (recipe_case(SMALL_RECIPE.split("grid:")[0] + "grid: [1, 2]\n" +
                                       SMALL_RECIPE.split("audiences.yaml\n")[1]), "expected a non-empty mapping"),
    "template list empty": (recipe_case(SMALL_RECIPE.replace(
        "templates:\n  - path: @ROOT@/prompts/topic_style_persona.j2\n  - path: @ROOT@/prompts/textbook.j2\n",
        "templates: []\n")), "expected a non-empty list"),
    "negative template weight": (replaced("textbook.j2", "textbook.j2\n    weight: -1"), "weight must be positive"),
    "missing template file": (replaced("textbook.j2", "nothing.j2"), "template file not found"),
    "missing grid file": (replaced("personas.yaml", "nobody.yaml"), "grid file not found"),
    "file outside the roots": (replaced("roots: [@ROOT@]", "roots: [.]"), "outside the recipe's folders"),
    "grid lacks a template variable": (replaced("  persona: @ROOT@/topics/personas.yaml\n", ""), r"uses \['persona'\]"),
    "bad --set": (lambda tmp: [*recipe_case(SMALL_RECIPE)(tmp), "--set", "nonsense"], "expected key=value"),
    # targets
    "target above K": (recipe_case(SMALL_RECIPE + "target: {score: 11}\n"), r"outside \[1/K, K\]"),
    "target below 1/K": (recipe_case(SMALL_RECIPE + "target: {score: 0.01}\n"), r"outside \[1/K, K\]"),
    "tolerance zero": (recipe_case(SMALL_RECIPE + "target: {score: 3, tolerance: 0}\n"), "tolerance must be > 0"),
    "llm judge without a model": (recipe_case(SMALL_RECIPE + "target: {score: 3, judge: llm}\n"),
                                  r"target.judge is llm but judge.model is not set"),
    "judge model under target (moved)": (recipe_case(SMALL_RECIPE + "target: {score: 3, judge: llm, judge_model: m}\n"),
                                         r"target.judge_model/judge_endpoint moved to the judge: section"),
    "llm target at another K than the judge": (
        recipe_case(SMALL_RECIPE + "target: {score: 3, judge: llm, k: 5}\njudge: {model: m}\n"),
        r"target.k \(5\) differs from judge.k \(10\)"),
    "unknown judge key in a recipe": (recipe_case(SMALL_RECIPE + "judge: {model: m, temperature: 0}\n"),
                                      r"judge: unknown key 'temperature'"),
    "judge openai backend without endpoint": (recipe_case(SMALL_RECIPE + "judge: {model: m, backend: openai}\n"),
                                              r"judge.endpoint is required for backend openai"),
    "size below one pilot round": (recipe_case(SMALL_RECIPE + "target: {score: 3}\n"), "smaller than one pilot round"),
    "dedup threshold": (recipe_case(SMALL_RECIPE + "dedup: {threshold: 1.5}\n"), r"dedup.threshold must be in"),
    # reference corpora, relative targets, the shift bound, seed documents
    "empty reference": (reference_case("", "reference: {path: real.jsonl}\n"), "reference: .*empty"),
    "unreadable reference": (reference_case(b"\xff\xfe{oops\n", "reference: {path: real.jsonl}\n"), "reference: .*UTF-8"),
    "missing reference": (reference_case(None, "reference: {path: real.jsonl}\n"), "reference: .*no such file"),
    "reference too small for K": (reference_case(REAL_FEW, "reference: {path: real.jsonl}\n"),
                                  "too few to measure D at K = 10"),
    "relative target without reference": (recipe_case(SMALL_RECIPE + "target: {relative: 1.2}\n"),
                                          "target.relative needs a reference corpus"),
    "max_shift zero": (reference_case(REAL, "reference: {path: real.jsonl}\ntarget: {relative: 1.2, max_shift: 0}\n"),
                       "target.max_shift must be > 0"),
    "max_shift negative": (reference_case(REAL, "reference: {path: real.jsonl}\ntarget: {score: 2, max_shift: -1}\n"),
                           "target.max_shift must be > 0"),
    "seed-document field missing": (seed_doc_case("body"), r"grid.seed_doc: .*no text field 'body'.*grid.seed_doc.text_field"),
    # grids
    "empty grid axis": (grid_case("axis: persona\nvalues: []\n"), "has no values"),
    "duplicate axis values": (grid_case("axis: persona\nvalues: [a nurse, A Nurse]\n"), "duplicate value"),
    "grid yaml syntax": (grid_case("axis: persona\nvalues: [a\n"), "invalid YAML"),
    "grid non-utf8": (grid_case("axis: persona\nvalues: [caf\xe9]\n".encode("latin-1")), "not UTF-8"),
    "grid negative weight": (grid_case("axis: persona\nvalues: [{value: a, weight: -2}]\n"), "positive number"),
    "grid zero weight": (grid_case("axis: persona\nvalues: [{value: a, weight: 0}]\n"), r"values\[0\]: weight of 'a'"),
    "grid nan weight": (grid_case("axis: persona\nvalues: [{value: a, weight: .nan}]\n"), "positive number, got nan"),
    "grid infinite weight": (grid_case("axis: persona\nvalues: [{value: a, weight: .inf}, b]\n"),
                             r"weight of 'a' is inf, outside 1e-09"),
    "grid text weight": (grid_case("axis: persona\nvalues: [{value: a, weight: '2'}]\n"), "without quotes"),
    "grid domain weight nan": (grid_case("axis: persona\ndomains: [{name: X, weight: nan, topics: [a]}]\n"),
                               r"domains\[0\]: weight of domain 'X' must be a positive number"),
    "grid weights as a mapping": (grid_case("axis: persona\nvalues: {a nurse: 2, a pilot: 1}\n"),
                                  "values is a mapping; it must be a list"),
    "grid null value": (grid_case("axis: persona\nvalues: [{value: null}]\n"), r"value is empty \(YAML null\)"),
    "grid integer value": (grid_case("axis: persona\nvalues: [1984]\n"), r"quote it to keep it as text: \"1984\""),
    "grid text where a list belongs": (grid_case("axis: persona\nvalues: a nurse\n"), "values must be a list"),
    "grid duplicate key": (grid_case("axis: persona\nvalues: [a]\nvalues: [b]\n"), r"bad_grid.yaml:3: duplicate key"),
    "grid deeply nested": (grid_case("axis: persona\nvalues: " + "[" * 3000 + "]" * 3000 + "\n"),
                           "nested deeper than 64 levels"),
    "grid alias bomb": (grid_case("axis: persona\na: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))),
                        "aliases stand for more than 10000 nodes"),
    "recipe duplicate key": (recipe_case(SMALL_RECIPE + "seed: 4\n"), r"duplicate key 'seed' \(first given on line"),
    # templates
    "template syntax error": (template_case("{# variables: [topic] #}About {{ topic }"), "template syntax error"),
    "template without header": (template_case("About {{ topic }}"), "missing declaration header"),
    "undeclared template variable": (template_case("{# variables: [topic] #}{{ topic }} {{ mood }}"),
                                     "differ from those used"),
    "template huge power": (template_case("{# variables: [topic] #}\n{{ topic }} {{ 9**(9**9) }}"),
                            r"bad.j2:2: the template went past the sandbox's limits: '\*\*' makes an integer"),
    "template nested ranges": (template_case("{# variables: [topic] #}\n{{ topic }}{% for i in range(9999) %}"
                                             "{% for j in range(9999) %}{% endfor %}{% endfor %}"),
                               r"bad.j2:2: .*more than 1000000 loop steps"),
    "template num_topics huge": (template_case("{#\nvariables: [topics]\nnum_topics: 100000000\n#}{{ topics }}"),
                                 "num_topics must be a positive integer of at most 20"),
    "template blocked dunder": (template_case("{# variables: [topic] #}\n{{ topic.__nothing__ }}"),
                                r"bad.j2:2: the sandbox blocks attribute '__nothing__'"),
    "template header duplicate key": (template_case("{#\nvariables: [topic]\nvariables: [topic]\n#}{{ topic }}"),
                                      r"bad.j2:3: duplicate key 'variables'"),
    # data files for score
    "score missing path": (data_case("nothing.parquet", None), "no such file"),
    "score empty jsonl": (data_case("empty.jsonl", ""), "empty"),
    "score non-utf8 jsonl": (data_case("latin.jsonl", b'{"text": "caf\xe9"}\n'), "UTF-8"),
    "score bad json line": (data_case("broken.jsonl", '{"text": "a"}\n{not json\n'), r"broken.jsonl:2: not JSON"),
    "score missing text field": (data_case("other.jsonl", '{"body": "a"}\n'), "text"),
    "score unknown format": (data_case("corpus.csv", "text\nhello\n"), "format|not a"),
    "score k larger than corpus": (data_case("tiny.jsonl", '{"text": "a"}\n{"text": "b"}\n', "--k", "10"),
                                   r"K=10|k=10|--k"),
    # exports and mixes
    "mix without weight": (export_mix_case("web=@TMP@/real.jsonl"), "NAME=PATH:WEIGHT|WEIGHT"),
    "mix weight not a number": (export_mix_case("web=@TMP@/real.jsonl:lots"), "not a number"),
    "mix weight negative": (export_mix_case("web=@TMP@/real.jsonl:-1"), "must be positive"),
    "mix missing file": (export_mix_case("web=@TMP@/nope.jsonl:0.5"), "nope.jsonl: no such file"),
    "export negative repetition": (lambda tmp: [*export_case()(tmp), "--max-repetition", "-1"], "must be positive"),
    "export missing tokenizer": (lambda tmp: [*export_case()(tmp), "--tokenizer", str(tmp / "tok")],
                                 "tok: no such file"),
    # RC4: a file that is not a tokenizer raised the tokenizers package's bare Exception
    "export file not a tokenizer": (lambda tmp: [*export_case()(tmp), "--tokenizer",
                                                 str(tmp / "run" / "recipe.resolved.yaml")],
                                    "recipe.resolved.yaml is not a tokenizer.json"),
    "export zero total tokens": (lambda tmp: [*export_case()(tmp), "--total-tokens", "0"], "must be positive"),
    # score options, checked before the corpus or any judge loads
    "score k of one": (data_case("c.jsonl", '{"text": "a"}\n', "--k", "1"), r"judge.k \(1\) must be at least 2"),
    "score zero precision": (data_case("c.jsonl", '{"text": "a"}\n', "--precision", "0"),
                             "--precision 0.0: must be at least 1e-06"),
    # RC5: a precision no number of batches reaches overflowed planning the batches
    "score tiny precision": (data_case("c.jsonl", '{"text": "a"}\n', "--precision", "1e-300"),
                             "--precision 1e-300: must be at least 1e-06"),
    "score zero max calls": (data_case("c.jsonl", '{"text": "a"}\n', "--max-calls", "0"), "--max-calls 0: must be positive"),
    "score threshold out of range": (data_case("c.jsonl", '{"text": "a"}\n', "--threshold", "3"), r"lies in \(0, 2\]"),
    "score llm judge without model": (data_case("c.jsonl", '{"text": "a"}\n', "--judge", "llm"), "needs a model"),
    "score endpoint without model": (data_case("c.jsonl", '{"text": "a"}\n', "--judge", "llm", "--judge-endpoint",
                                               "http://127.0.0.1:9/v1"), "needs the name of the model"),
    "calibrate without model": (data_case("c.jsonl", '{"text": "a"}\n', command="calibrate"), "needs a model"),
    # templates that fail only when rendered
    "template sandbox violation": (template_case("{# variables: [topic] #}\n{{ topic.__class__ }}"),
                                   r"bad.j2:2: the sandbox refused"),
    "template runtime error": (template_case("{# variables: [topic] #}\n{{ topic | int + none }}"),
                               r"bad.j2:2: template failed"),
    # regression: a template failing only past the first grid value wrote recipe.resolved.yaml before failing
    "template failing on a later persona": (template_case(f"{{# variables: [persona] #}}\n{{{{ (1 if persona == "
                                                          f"'{FIRST_PERSONA}' else none) + 1 }}}}"),
                                            r"bad.j2:2: template failed"),
    "unknown truncation policy": (recipe_case(SMALL_RECIPE + "keep_truncated: cut\n"), "'cut' is not allowed"),
    # engine and streaming settings
    "max_num_seqs not positive": (replaced("engine: {backend: ray}", "engine: {backend: ray, max_num_seqs: 0}"),
                                  r"engine.max_num_seqs must be positive, got 0"),
    "answers cannot fit the context": (replaced("engine: {backend: ray}", "engine: {backend: ray, max_model_len: 32}"),
                                       r"sampling.max_tokens \(32\) leaves no room for a prompt"),
    "batch size of the batch loop": (replaced("size: {num_docs: 20, shard_rows: 8}", "size: {num_docs: 20, batch_size: 8}"),
                                     r"unknown key 'batch_size' \(engines are fed continuously"),
    # render
    "render non-positive n": (lambda tmp: ["render", str(write_recipe(tmp, SMALL_RECIPE)), "-n", "0"],
                              "must be positive"),
    "render n beyond the limit": (lambda tmp: ["render", str(write_recipe(tmp, SMALL_RECIPE)), "-n", "100000000"],
                                  r"-n 100000000: must be at most 10000"),
    # --set syntax
    "bad YAML inside --set": (set_case("size={a"), r"--set 'size=\{a': invalid YAML"),
    "bad YAML inside --set of render": (set_case("size={a", command="render"), r"--set 'size=\{a': invalid YAML"),
    "--set key with an empty part": (set_case("size..num_docs=5"), r"the key 'size..num_docs' has an empty part"),
    "--set value, then a key inside it": (set_case("seed=1", "seed.x=2"), r"--set 'seed.x=2' conflicts with --set 'seed=1'"),
    "--set key given twice": (set_case("seed=1", "seed=2"), r"seed is also set by --set 'seed=1'"),
    "--set through a plain value": (set_case("size.num_docs.x=3"), r"size.num_docs is the value 20 in the recipe"),
    "--set through a list": (set_case("templates.0.weight=3"), r"templates is a list in the recipe"),
    # every recipe value, checked before any work
    "negative seed": (set_case("seed=-1"), r"seed must be in \[0, 2\*\*63 - 1\], got -1"),
    "seed beyond 64 bits": (set_case("seed=18446744073709551616"), r"seed must be in \[0, 2\*\*63 - 1\]"),
    "nan temperature": (set_case("sampling.temperature=.nan"), r"sampling.temperature must be a finite number, got nan"),
    "infinite temperature": (set_case("sampling.temperature=.inf"), r"sampling.temperature must be a finite number"),
    "infinite engine timeout": (set_case("engine.timeout_s=.inf"), r"engine.timeout_s must be a finite number, got inf"),
    "nan judge timeout": (set_case("judge.timeout_s=.nan"), r"judge.timeout_s must be a finite number, got nan"),
    "gpu memory share above 1": (set_case("engine.gpu_memory_utilization=5"),
                                 r"engine.gpu_memory_utilization must be in \(0, 1\], got 5.0"),
    "zero replicas": (set_case("engine.num_replicas=0"), r"engine.num_replicas must be positive, got 0"),
    "zero tensor parallel size": (set_case("engine.tensor_parallel_size=0"), r"engine.tensor_parallel_size must be positive"),
    "unknown engine dtype": (set_case("engine.dtype=int3"), r"engine.dtype 'int3' is not a vLLM dtype"),
    "recipe name leaving runs/": (set_case("name=../elsewhere"), r"name '../elsewhere' cannot name a folder"),
    "empty model": (set_case("model="), r"model is empty"),
    "template weight beyond the bound": (replaced("textbook.j2", "textbook.j2\n    weight: 1.0e+300"),
                                         r"templates\[1\].weight must be at most 1e9"),
    "a number YAML reads as text": (replaced("temperature: 0.7", "temperature: 7e-1"),
                                    r"sampling.temperature: expected float, got '7e-1' \(fix: write 7.0e-01 \(YAML"),
    "score judge timeout infinite": (data_case("c.jsonl", REAL, "--set", "judge.timeout_s=.inf"),
                                     r"judge.timeout_s must be a finite number, got inf"),
    "num_docs beyond the bound": (set_case("size.num_docs=10000000000000"), r"size.num_docs must be at most"),
    "scoring k above the corpus": (set_case("scoring.enabled=true", "scoring.k=500"),
                                   r"scoring.k \(500\) is more than the 20 documents.*fix: set scoring.k: 20 or less"),
    "scoring k of one": (set_case("scoring.enabled=true", "scoring.k=1"), r"scoring.k \(1\) must be at least 2"),
    "target k above a pilot round": (set_case("size.num_docs=1000", "target.score=3", "target.k=500"),
                                     r"target.k \(500\) is more than the 400 documents of a pilot round"),
    "target k of zero": (set_case("target.score=3", "target.k=0"), r"target.k \(0\) must be at least 2"),
    "num_topics above the topic axis": (num_topics_case, r"num_topics 4 is more than .* topic axis has 3 topics"),
    # output paths, checked before any work
    "run --out is a file": (out_path_case(a_file), r"--out .*afile: is a file, not a folder"),
    "run --out under a file": (out_path_case(lambda tmp: a_file(tmp) / "run"),
                               r"afile is a file, so nothing can be created under it"),
    # score: every input and output checked before any corpus is scored
    "score: the second corpus is smaller than K": (two_corpora_case,
                                                   r"corpus .*b.jsonl: K=10 documents per batch but the corpus has only 3.*--k 3 or less"),
    "score of one document": (data_case("one.jsonl", '{"text": "a"}\n'), r"score a corpus of 2 or more documents"),
    "score --json onto the corpus": (lambda tmp: [*data_case("c.jsonl", REAL)(tmp), "--json", str(tmp / "c.jsonl")],
                                     r"--json .*c.jsonl: is the input .* itself"),
    "score --json under a file": (lambda tmp: [*data_case("c.jsonl", REAL)(tmp), "--json", str(tmp / "c.jsonl" / "r.json")],
                                  r"c.jsonl is a file, so nothing can be created under it"),
    "score negative seed": (data_case("c.jsonl", REAL, "--seed", "-1"), r"--seed -1: must be in"),
    "score --set judge as a value": (data_case("c.jsonl", REAL, "--set", "judge=3"), r"--set judge=3: judge is a section"),
    # export: the mix and its folder, checked before any tokenizer or corpus loads
    "export --out inside the source run": (lambda tmp: [*export_case()(tmp)[:-2], "--out", str(tmp / "run" / "exp")],
                                           r"--out .*exp: lies inside the input"),
    "export --out is a file": (lambda tmp: [*export_case()(tmp)[:-2], "--out", str(a_file(tmp, "exp"))],
                               r"--out .*exp: is a file, not a folder"),
    "mix weight that rounds to no tokens": (export_mix_case("web=@TMP@/real.jsonl:1e-300"), r"source 'web' gets no tokens"),
    "export infinite repetition": (lambda tmp: [*export_case()(tmp), "--max-repetition", "inf"],
                                   r"--max-repetition inf: must be at most 1000 epochs"),
    "export total tokens beyond the bound": (lambda tmp: [*export_case()(tmp), "--total-tokens", "10" + "0" * 20],
                                             r"--total-tokens 1\d+: must be at most 1e\+13"),
    "score batches beyond the bound": (data_case("c.jsonl", REAL, "--num-batches", "1000000000000"),
                                       r"--num-batches 1000000000000: must be in \[1, 1000000\]"),
    "export negative seed": (lambda tmp: [*export_case()(tmp), "--seed", "-3"], r"--seed -3: must be in"),
    # quality gates: checked before any engine starts
    "unknown quality gate": (quality_case("{perplexity: {}}"),
                             r"quality: unknown key 'perplexity' \(fix: valid keys: min_tokens, gopher"),
    "unknown gate parameter": (quality_case("{gopher_quality: {min_words: 3}}"),
                               r"quality.gopher_quality: unknown key 'min_words'.*min_doc_words"),
    "gate parameter of the wrong type": (quality_case("{c4: {min_num_sentences: many}}"),
                                         r"quality.c4.min_num_sentences: expected int"),
    "gate threshold out of range": (quality_case("{gopher_repetition: {dup_line_frac: 1.5}}"),
                                    r"quality.gopher_repetition.dup_line_frac must be in \[0, 1\], got 1.5"),
    "gate n-gram that is no length": (quality_case("{gopher_repetition: {dup_n_grams: {x: 0.1}}}"),
                                      r"quality.gopher_repetition.dup_n_grams.x is not an n-gram length"),
    "gate bounds crossed": (quality_case("{gopher_quality: {min_doc_words: 9, max_doc_words: 8}}"),
                            r"min_doc_words \(9\) is above"),
    "max_rejection_rate above 1": (quality_case("{min_tokens: 5, max_rejection_rate: 2}"),
                                   r"quality.max_rejection_rate must be in \[0, 1\], got 2"),
    "quality without a gate": (quality_case("{max_rejection_rate: 0.2}"),
                               r"quality names no gate \(fix: add one of min_tokens"),
    "missing evaluation set": (quality_case("{decontaminate: [evals/mmlu.jsonl]}"),
                               r"quality.decontaminate\[0\] \(.*mmlu.jsonl\): no such file"),
    "evaluation set without text": (reference_case("", "quality: {decontaminate: [real.jsonl]}\n"),
                                    r"real.jsonl: the evaluation set holds no text"),
    "evaluation set not JSON": (reference_case("{oops\n", "quality: {decontaminate: [real.jsonl]}\n"),
                                r"real.jsonl: cannot read the evaluation set \(JSONDecodeError"),
    "decontamination n-gram too short": (quality_case("{min_tokens: 5, decontaminate_n: 1}"),
                                         r"quality.decontaminate_n must be in \[3, 100\], got 1"),
    "llm score threshold out of range": (quality_case("{llm_score: {threshold: 7, judge: {model: m}}}"),
                                         r"quality.llm_score.threshold must be in \[1, 5\].*got 7"),
    "llm score without a judge": (quality_case("{llm_score: {threshold: 3}}"),
                                  r"quality.llm_score has no judge model \(fix: add judge: \{model: M\}"),
    "llm score rubric missing": (quality_case("{llm_score: {judge: {model: m}, rubric: rubrics/edu.j2}}"),
                                 r"quality.llm_score.rubric: .*edu.j2: no such rubric file"),
    "llm score judge endpoint missing": (
        quality_case("{llm_score: {judge: {model: m, backend: openai}}}"),
        r"quality.llm_score.judge.endpoint is required for backend openai"),
    "llm score judge unreachable": (
        quality_case("{llm_score: {judge: {model: m, backend: openai, endpoint: 'http://127.0.0.1:9/v1'}}}"),
        r"endpoint http://127.0.0.1:9/v1 is unreachable"),
}


def source_case(source: str, *, rows: int = 3, extra: str = "", grid: str = "", size: str = "{shard_rows: 8}"):
    """SMALL_RECIPE rewriting tmp/src.jsonl (`rows` documents) with the seed-document Q&A template
    and the `source:` section `source` (YAML flow mapping); `grid` adds axes, `extra` top-level lines."""
    def make(tmp: Path) -> list[str]:
        (tmp / "src.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": f"Document {i}."}) + "\n"
                                               for i in range(rows)))
        body = (SMALL_RECIPE.replace("@ROOT@/prompts/topic_style_persona.j2", "@ROOT@/prompts/seed_qa.j2")
                .replace("  - path: @ROOT@/prompts/textbook.j2\n", "")
                .replace("roots: [@ROOT@]", f"roots: [@ROOT@, {tmp}]")
                .replace("size: {num_docs: 20, shard_rows: 8}", f"size: {size}").replace("grid:\n", "grid:\n" + grid))
        return ["run", str(write_recipe(tmp, body + f"source: {source}\n" + extra)), "--out", str(tmp / "out")]
    return make


SOURCE_CASES = {
    "source missing": (source_case("{path: nothing.jsonl}"), r"source.path .*nothing.jsonl: no such file or folder"),
    "source text field missing": (source_case("{path: src.jsonl, text_field: body}"),
                                  r"source.text_field 'body' is not a field .* it has id, text"),
    "source id field missing": (source_case("{path: src.jsonl, id_field: key}"),
                                r"source.id_field 'key' is not a field"),
    "source empty": (source_case("{path: src.jsonl}", rows=0), r"holds no rows with text in 'text' \(0 rows read\)"),
    "source per_source zero": (source_case("{path: src.jsonl, per_source: 0}"),
                               r"source.per_source must be at least 1"),
    "source unknown key": (source_case("{path: src.jsonl, k: 4}"),
                           r"source: unknown key 'k'.*valid keys: path, text_field"),
    "source chunk under the prompt": (source_case("{path: src.jsonl, chunk_tokens: 20}"),
                                      r"source.chunk_tokens 20 is under the prompt of template seed_qa"),
    "source chunk over the context": (source_case("{path: src.jsonl, chunk_tokens: 3000}"),
                                      r"seed_qa's prompt .* \+ source.chunk_tokens 3000 .* exceeds engine.max_model_len"),
    "source and a seed_doc axis": (source_case("{path: src.jsonl}", grid="  seed_doc: {path: src.jsonl}\n"),
                                   r"both source: and grid.seed_doc give templates `seed_doc`"),
    "source with num_docs that differs": (source_case("{path: src.jsonl, per_source: 2}", size="{num_docs: 5}"),
                                          r"size.num_docs 5 differs from what source: makes \(3 units"),
    "source too small to steer": (source_case("{path: src.jsonl}", extra="target: {score: 3}\n"),
                                  r"source: has 3 units, too few to measure its own D at target.k = 10"),
    "source with a reference and a target": (
        source_case("{path: src.jsonl}", extra="target: {relative: 0.5}\nreference: {path: src.jsonl}\n"),
        r"reference: beside source: and target: would give the target two meanings"),
    "source sweep over its slots": (
        source_case("{path: src.jsonl}", rows=30, extra="target: {score: 1.5, k: 2, pilot_docs: 10}\n"),
        r"the first pilot sweep \(4 × 10 documents\) is more than the run makes \(30 units"),
    "source steered with one try": (
        source_case("{path: src.jsonl, max_attempts: 1}", rows=30, extra="target: {score: 1.5, k: 2}\n"),
        r"source.max_attempts 1 leaves no try for the slots of pilot documents"),
}
CASES.update(SOURCE_CASES)


def judge_case(*options: str, recipe: str = ""):
    """`score` with the LLM judge (model m, planned by fakes.fake_judge_model), or `run` of a
    recipe whose target uses it when `recipe` holds its judge: section."""
    if recipe:
        return recipe_case(SMALL_RECIPE.replace("size: {num_docs: 20,", "size: {num_docs: 200,")
                           + "target: {score: 3, judge: llm}\n" + recipe)
    return data_case("c.jsonl", REAL, "--judge", "llm", "--judge-model", "m", *options)


JUDGE_CASES = {
    "k documents cannot fit the context": (judge_case("--set", "judge.max_model_len=4000"),
                                           r"judge: K=10 documents at 64 tokens each do not fit: a \d+-token prompt"),
    "k documents at a given cap cannot fit": (judge_case("--set", "judge.max_doc_tokens=700"),
                                              r"K=10 documents at 700 tokens each do not fit.*the model's own: 8192"),
    "context above the model's own": (judge_case("--set", "judge.max_model_len=100000"),
                                      r"judge.max_model_len 100000 is above the judge model's own context of 8192"),
    "unknown judge backend": (judge_case("--set", "judge.backend=tgi"), r"judge.backend: 'tgi' is not allowed"),
    "unknown judge setting": (judge_case("--set", "judge.temperature=0"), r"unknown key 'temperature'"),
    "score --set outside the judge": (judge_case("--set", "size.num_docs=3"), r"score takes only judge.KEY=VALUE"),
    "document cap too small to judge": (judge_case("--set", "judge.max_doc_tokens=10"),
                                        r"judge.max_doc_tokens \(10\) is below 64"),
    "judge verify not a boolean": (judge_case("--set", "judge.verify=maybe"), r"judge.verify: expected bool"),
    "run: k documents cannot fit": (judge_case(recipe="judge: {model: m, max_model_len: 4000}\n"),
                                    r"K=10 documents at 64 tokens each do not fit"),
}


@pytest.mark.timeout(120)  # template, YAML and grid inputs that once hung
@pytest.mark.parametrize("name", sorted(CASES) + sorted(JUDGE_CASES))
def test_bad_input_exits_2_with_one_clear_line(name, tmp_path, capsys, monkeypatch):
    from fakes import fake_judge_model
    fake_judge_model(monkeypatch)  # judge model m: words are tokens, 8192 tokens of context
    make, match = CASES[name] if name in CASES else JUDGE_CASES[name]
    args = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "(fix: " in err and "Traceback" not in err
    import re
    assert re.search(match, err), err
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_fresh_machine_export_with_bad_option_loads_no_model(tmp_path):
    """Regression: on a fresh machine `generator export ... --max-repetition -1` loaded the
    tokenizer first, so the embedded model was converted and its progress bars filled stderr
    (17 lines) before the option was rejected. Options are now checked before any heavy step."""
    import subprocess
    import sys
    from fakes import FakeBackend
    from generator.run import controller
    from generator.recipe import load_recipe
    run = tmp_path / "run"
    controller.run(load_recipe(write_recipe(tmp_path, SMALL_RECIPE)), run, FakeBackend())
    cache = tmp_path / "empty-cache"
    env = {**__import__("os").environ, "GENERATOR_CACHE": str(cache), "HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "generator.cli", "export", str(run), "--to", "datatrove",
                           "--out", str(tmp_path / "out"), "--max-repetition", "-1"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: --max-repetition -1.0: must be positive (fix: e.g. --max-repetition 4)"]
    assert not (cache / "models").exists()
    assert not (tmp_path / "out").exists()


def test_resume_of_an_older_layout_exits_2_before_any_engine_starts(tmp_path, capsys):
    from fakes import FakeBackend
    from generator.run import controller
    from generator.recipe import load_recipe
    recipe, out = write_recipe(tmp_path, SMALL_RECIPE), tmp_path / "out"
    controller.run(load_recipe(recipe), out, FakeBackend())
    state = json.loads((out / "state.json").read_text())
    del state["layout"]  # as the batch loop wrote it
    (out / "state.json").write_text(json.dumps(state))
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    code = main(["run", str(recipe), "--out", str(out), "--resume"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "written by an older layout" in err and "(fix: start a new run in a new --out" in err
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before


@pytest.mark.parametrize("name", ["template failing on a later persona", "scoring k above the corpus",
                                  "nan temperature", "gpu memory share above 1", "num_topics above the topic axis"])
def test_a_refused_run_leaves_an_existing_empty_out_empty(name, tmp_path, capsys):
    """Regression: a template failing past the first grid value (and a K above the corpus) were
    found only after recipe.resolved.yaml was written into --out (or the corpus generated)."""
    args = CASES[name][0](tmp_path)
    out = Path(args[args.index("--out") + 1])
    out.mkdir()
    assert main(args) == 2
    assert list(out.iterdir()) == [], capsys.readouterr().err
