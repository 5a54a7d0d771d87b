"""Bounded loading of every YAML a user writes: recipes, grid files, template headers, `--set` values.

On top of PyYAML's safe loader, checked while the document is composed, before any Python
object is built:

- size: at most `MAX_YAML_BYTES` of text and `MAX_NODES` values, keys and collections (the
  pure-Python parser reads about 50k nodes a second, so loading stays within seconds);
- nesting: at most `MAX_DEPTH` levels, counting what aliases stand for;
- aliases (`*name`): together they may stand for at most `MAX_ALIAS_NODES` nodes, and never
  for their own anchor (a recursive structure), so an alias bomb is refused, not expanded;
- mapping keys: a key given twice in one mapping is refused (a merge `<<:` may still be overridden).

Every refusal is a one-line `UserError` naming the file (or `--set` key) and the line.
"""
from __future__ import annotations

from pathlib import Path

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from generator.errors import UserError

MAX_YAML_BYTES = 4 * 1024 * 1024
MAX_NODES = 200_000
MAX_DEPTH = 64
MAX_ALIAS_NODES = 10_000
MAX_INT_DIGITS = 100  # longer integers are refused (Python refuses to parse beyond 4300 anyway)


class _Refusal(Exception):
    """A bound broken while loading: what, the 1-based line, and the fix."""

    def __init__(self, what: str, line: int, fix: str):
        super().__init__(what)
        self.what, self.line, self.fix = what, line, fix


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts depth, alias expansion and duplicate keys as it composes."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._open_anchors: list[str] = []
        self._alias_nodes = 0
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, height)

    def compose_node(self, parent, index):
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, AliasEvent):
            return self._compose_alias(event, line)
        if self._depth >= MAX_DEPTH:
            raise _Refusal(f"nested deeper than {MAX_DEPTH} levels", line,
                           "flatten the structure; recipes and grid files need only a few levels")
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Refusal(f"more than {MAX_NODES} values, keys and lists", line,
                           "shorten the file, e.g. keep a sample of the values")
        anchor = getattr(event, "anchor", None)
        self._depth += 1
        if anchor is not None:
            self._open_anchors.append(anchor)
        try:
            return Composer.compose_node(self, parent, index)
        finally:
            self._depth -= 1
            if anchor is not None:
                self._open_anchors.pop()

    def _compose_alias(self, event: AliasEvent, line: int) -> Node:
        if event.anchor in self._open_anchors:
            raise _Refusal(f"alias *{event.anchor} is inside its own anchor (a recursive structure)", line,
                           "repeat the values instead of referring to the enclosing anchor")
        node = Composer.compose_node(self, None, None)  # the anchored node (an error if undefined)
        nodes, height = self._measure(node)
        self._alias_nodes += nodes
        if self._alias_nodes > MAX_ALIAS_NODES:
            raise _Refusal(f"aliases stand for more than {MAX_ALIAS_NODES} nodes in all (an alias bomb?)",
                           line, "write the values out instead of repeating them with &anchor / *alias")
        if self._depth + height > MAX_DEPTH:
            raise _Refusal(f"alias *{event.anchor} nests deeper than {MAX_DEPTH} levels", line,
                           "flatten the structure; recipes and grid files need only a few levels")
        return node

    def _measure(self, node: Node) -> tuple[int, int]:
        """Nodes and height of a finished node, counting what its own aliases stand for."""
        hit = self._sizes.get(id(node))
        if hit is not None:
            return hit
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        counts = [self._measure(c) for c in children]
        result = (1 + sum(c[0] for c in counts), 1 + max((c[1] for c in counts), default=0))
        self._sizes[id(node)] = result
        return result

    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            seen: dict[object, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # unhashable: the safe constructor refuses it with its own message
                if first is not None:
                    raise _Refusal(f"duplicate key {_short(key_node)} (first given on line {first})", line,
                                   "keep one of them: the later one would silently replace the first")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:  # e.g. a date like 2024-13-45
            raise _Refusal(f"cannot read the value {_short(node)} ({exc})", node.start_mark.line + 1,
                           "quote the value to keep it as text") from None

    def construct_yaml_int(self, node):
        if len(str(node.value)) > MAX_INT_DIGITS:
            raise _Refusal(f"an integer of more than {MAX_INT_DIGITS} digits", node.start_mark.line + 1,
                           "use a smaller number, or quote it to keep it as text")
        return super().construct_yaml_int(node)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def _short(node: Node) -> str:
    text = str(node.value) if isinstance(node, ScalarNode) else node.tag
    return repr(text if len(text) <= 40 else text[:40] + "…")


def load_yaml_text(text: str, where: str, *, first_line: int = 1):
    """Parse one YAML document within the bounds above; `where` names its source in errors and
    `first_line` is the line of the file the text starts on."""
    if len(text) > MAX_YAML_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise UserError(f"{where}: larger than {MAX_YAML_BYTES // (1024 * 1024)} MiB of YAML",
                        fix="split it into smaller files, or keep large data in Parquet/JSONL files")
    offset = first_line - 1
    try:
        loader = _BoundedLoader(text)
    except yaml.reader.ReaderError as exc:  # a control character, checked before parsing
        line = text.count("\n", 0, max(exc.position, 0)) + 1 + offset
        raise UserError(f"{where}:{line}: invalid YAML (character #x{exc.character:04x} is not allowed)",
                        fix="remove the control character, or write it as an escape in a double-quoted "
                            "text") from None
    try:
        return loader.get_single_data()
    except _Refusal as exc:
        raise UserError(f"{where}:{exc.line + offset}: {exc.what}", fix=exc.fix) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1 + offset}" if mark else ""
        problem = " ".join(str(exc.problem or exc.context or "syntax error").split())
        raise UserError(f"{where}{line}: invalid YAML ({problem})",
                        fix="fix the YAML syntax on that line") from None
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())[:200]
        raise UserError(f"{where}: invalid YAML ({first})", fix="fix the YAML syntax") from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply to read", fix="flatten the structure") from None
    finally:
        loader.dispose()


def read_yaml(path: Path, what: str, missing_fix: str):
    """Read a user's YAML file (recipe or grid) within the bounds of `load_yaml_text`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} file not found", fix=missing_fix)
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise UserError(f"{path}: larger than {MAX_YAML_BYTES // (1024 * 1024)} MiB of YAML",
                            fix="split it into smaller files, or keep large data in Parquet/JSONL files")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text", fix=f"save the {what} as UTF-8") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the {what} file ({exc.strerror or exc})",
                        fix="check the file's permissions") from None
    return load_yaml_text(text, str(path))
