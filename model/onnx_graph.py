"""The convolution graph of an ONNX model, and the structural match of two such graphs.

An exported detector is its convolutions plus the glue between them (activations, concats, residual adds, pools,
resizes, slices). ``ConvGraph`` reduces an ONNX graph to that: every ``Conv`` with its attributes, and the input
of each written as a canonical expression over earlier convs, e.g. ``("cat", 1, (("silu", ("conv", 3)), ...))``.
Two exports of the same network, by different exporters or opsets, then give the same expressions up to the
numbering of the convs; ``match_convs`` finds that numbering. SiLU is recognised in both of its exported forms
(``x * sigmoid(x)`` or a single op); ``Identity`` and ``Cast`` are transparent; concat order is kept (it decides
the channel layout the next conv's weights expect) while residual adds are order-free.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

Expr = tuple  # ("input",) | ("conv", i) | (op, ..., children)

_TRANSPARENT = {"Identity", "Cast", "Dropout"}
_CHILDLESS_PARAMS = {"Resize", "Upsample", "Reshape", "Expand", "Tile"}  # their extra inputs are shapes/scales


class GraphMismatch(ValueError):
    """Two convolution graphs differ; the message names the first difference."""


@dataclass(frozen=True)
class Conv:
    """One ``Conv`` node: its weight/bias tensor names, attributes and canonical input."""

    node_name: str
    weight: str
    bias: str | None
    weight_shape: tuple[int, ...]
    stride: tuple[int, ...]
    pads: tuple[int, ...]
    dilations: tuple[int, ...]
    groups: int
    source: Expr

    @property
    def attrs(self) -> tuple:
        """What two convs must share to be the same layer (the bias is absent when a BN follows)."""
        return (self.weight_shape, self.stride, self.pads, self.dilations, self.groups)

    def describe(self) -> str:
        """``weight [64, 32, 3, 3], stride 2, groups 1``."""
        stride = "x".join(str(s) for s in self.stride)
        return f"weight {list(self.weight_shape)}, stride {stride}, groups {self.groups}"


class ConvGraph:
    """The convs of an ONNX ``GraphProto`` in graph (topological) order, with canonical inputs."""

    def __init__(self, graph) -> None:
        self.graph = graph
        self._producer = {out: node for node in graph.node for out in node.output}
        self._inits = {init.name: init for init in graph.initializer}
        self.inputs = [i.name for i in graph.input if i.name not in self._inits]
        conv_nodes = [node for node in graph.node if node.op_type == "Conv"]
        self._conv_index = {node.output[0]: i for i, node in enumerate(conv_nodes)}
        self._memo: dict[str, Expr] = {}
        self.convs = [self._conv(node) for node in conv_nodes]
        self.output_refs = set()
        for out in graph.output:
            self.output_refs |= conv_refs(self.expr(out.name))
        self.consumers: list[list[int]] = [[] for _ in self.convs]
        for i, conv in enumerate(self.convs):
            for j in conv_refs(conv.source):
                self.consumers[j].append(i)
        self.downstream = self._downstream_signatures()

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or ``Constant`` output (through Identity), else None."""
        from onnx import numpy_helper

        if name in self._inits:
            return numpy_helper.to_array(self._inits[name])
        node = self._producer.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
            return None
        if node.op_type in _TRANSPARENT:
            return self.constant(node.input[0])
        return None

    def expr(self, name: str) -> Expr:
        """Canonical expression of tensor ``name`` in terms of the graph input and conv outputs."""
        if name not in self._memo:
            self._memo[name] = self._expr(name)
        return self._memo[name]

    def _expr(self, name: str) -> Expr:
        if name in self._conv_index:
            return ("conv", self._conv_index[name])
        if name in self.inputs:
            return ("input",)
        if self.constant(name) is not None:
            return ("const",)
        node = self._producer.get(name)
        if node is None:
            return ("unknown", name)
        op = node.op_type
        if op in _TRANSPARENT:
            return self.expr(node.input[0])
        if op in ("Silu", "Swish"):
            return ("silu", self.expr(node.input[0]))
        if op == "Mul" and len(node.input) == 2:
            a, b = node.input
            if self._is_sigmoid_of(b, a):
                return ("silu", self.expr(a))
            if self._is_sigmoid_of(a, b):
                return ("silu", self.expr(b))
        if op == "Concat":
            return ("cat", _attr(node, "axis", 0), tuple(self.expr(i) for i in node.input))
        if op in ("Add", "Sum"):
            return ("add", tuple(sorted((self.expr(i) for i in node.input), key=repr)))
        if op == "MaxPool":
            return ("maxpool", tuple(_attr(node, "kernel_shape", ())), self.expr(node.input[0]))
        if op == "Slice":
            return self._slice(node)
        if op in _CHILDLESS_PARAMS:
            return (op.lower(), self.expr(node.input[0]))
        children = tuple(self.expr(i) for i in node.input if i and self.constant(i) is None)
        return (op.lower(), children)

    def _is_sigmoid_of(self, maybe_sigmoid: str, x: str) -> bool:
        node = self._producer.get(maybe_sigmoid)
        return node is not None and node.op_type == "Sigmoid" and node.input[0] == x

    def _slice(self, node) -> Expr:
        """Chained slices collapse to one ``("slice", ((axis, start, step), ...), base)``, axis order-free."""
        parts = []
        while node is not None and node.op_type == "Slice":
            starts, axes, steps = (self.constant(i) if i else None for i in _slice_inputs(node))
            if starts is None or axes is None:
                return ("slice", "dynamic", self.expr(node.input[0]))
            steps = steps if steps is not None else np.ones_like(starts)
            triples = zip(axes.ravel(), starts.ravel(), steps.ravel(), strict=True)
            parts += [(int(a), int(s), int(t)) for a, s, t in triples]
            parent = self._producer.get(node.input[0])
            if parent is None or parent.op_type != "Slice" or node.input[0] in self._conv_index:
                return ("slice", tuple(sorted(parts)), self.expr(node.input[0]))
            node = parent
        return ("slice", tuple(sorted(parts)), self.expr(node.input[0]))

    def _conv(self, node) -> Conv:
        weight = node.input[1]
        value = self.constant(weight)
        if value is None:
            raise GraphMismatch(f"Conv {node.name or node.output[0]!r}: its weight is not a constant tensor")
        kernel = tuple(value.shape[2:])
        ones = tuple(1 for _ in kernel)
        return Conv(
            node_name=node.name or node.output[0],
            weight=weight,
            bias=node.input[2] if len(node.input) > 2 and node.input[2] else None,
            weight_shape=tuple(int(d) for d in value.shape),
            stride=tuple(_attr(node, "strides", ones)),
            pads=tuple(_attr(node, "pads", tuple(0 for _ in kernel * 2))),
            dilations=tuple(_attr(node, "dilations", ones)),
            groups=int(_attr(node, "group", 1)),
            source=self.expr(node.input[0]),
        )

    def _downstream_signatures(self) -> list[str]:
        """A hash per conv of everything it feeds (attributes of the convs below it, and the graph output):
        tells apart sibling convs that read the same tensor (a CSP block's two 1x1 convs, a head's branches)."""
        sig: list[str] = [""] * len(self.convs)
        for i in reversed(range(len(self.convs))):
            below = sorted(sig[j] for j in self.consumers[i])
            text = repr((self.convs[i].attrs, i in self.output_refs, below))
            sig[i] = hashlib.sha1(text.encode()).hexdigest()
        return sig


def _attr(node, name: str, default):
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _slice_inputs(node) -> tuple[str | None, str | None, str | None]:
    """(starts, axes, steps) input names of a Slice (opset >= 10 form)."""
    inputs = list(node.input) + [""] * 5
    return inputs[1], inputs[3] or None, inputs[4] or None


def conv_refs(expr: Expr) -> set[int]:
    """Indices of the convs an expression reads."""
    if not isinstance(expr, tuple):
        return set()
    if len(expr) == 2 and expr[0] == "conv" and isinstance(expr[1], int):
        return {expr[1]}
    refs: set[int] = set()
    for part in expr:
        refs |= conv_refs(part)
    return refs


def renumber(expr: Expr, mapping: dict[int, int]) -> Expr:
    """``expr`` with conv indices replaced through ``mapping`` (unmapped ones become -1)."""
    if not isinstance(expr, tuple):
        return expr
    if len(expr) == 2 and expr[0] == "conv" and isinstance(expr[1], int):
        return ("conv", mapping.get(expr[1], -1))
    if expr and expr[0] == "add":  # order-free: sort again under the new numbering
        return ("add", tuple(sorted((renumber(p, mapping) for p in expr[1]), key=repr)))
    return tuple(renumber(part, mapping) for part in expr)


def _is_expr(part) -> bool:
    return isinstance(part, tuple) and bool(part) and isinstance(part[0], str)


def render(expr: Expr, names: list[str], depth: int = 3) -> str:
    """A short human-readable form of an expression, convs by ``names``."""
    head = expr[0]
    if head == "conv":
        return names[expr[1]] if 0 <= expr[1] < len(names) else "?"
    if head == "input" or depth == 0:
        return "input" if head == "input" else f"{head}(...)"
    args = []
    for part in expr[1:]:
        if _is_expr(part):
            args.append(render(part, names, depth - 1))
        elif isinstance(part, tuple) and part and all(_is_expr(q) for q in part):
            args += [render(q, names, depth - 1) for q in part]
    return f"{head}({', '.join(args)})"


def match_convs(ours: ConvGraph, theirs: ConvGraph, our_names: list[str], what: str) -> dict[int, int]:
    """Map each conv of ``ours`` to the conv of ``theirs`` at the same place in the network.

    Walks ``ours`` in topological order; a conv matches when its attributes, its input expression (through the
    mapping so far) and its downstream signature agree. Raises ``GraphMismatch`` naming the first conv of
    ``ours`` (by ``our_names``) without a counterpart, or the first conv of ``theirs`` left over.
    """
    mapping: dict[int, int] = {}
    taken: set[int] = set()
    their_names = [c.node_name for c in theirs.convs]
    for i, conv in enumerate(ours.convs):
        wanted = renumber(conv.source, mapping)
        same_input = [j for j, c in enumerate(theirs.convs) if j not in taken and c.source == wanted]
        fits = [j for j in same_input if theirs.convs[j].attrs == conv.attrs]
        exact = [j for j in fits if theirs.downstream[j] == ours.downstream[i]]
        if exact or len(fits) == 1:
            j = (exact or fits)[0]
            mapping[i] = j
            taken.add(j)
            continue
        where = f"{what}: no Conv in the ONNX graph matches {our_names[i]} ({conv.describe()}"
        where += f", reading {render(conv.source, our_names)})"
        if same_input:
            found = theirs.convs[same_input[0]]
            raise GraphMismatch(f"{where}; the Conv {found.node_name!r} there reads the same input but has "
                                f"{found.describe()}")  # fmt: skip
        by_shape = [j for j, c in enumerate(theirs.convs) if j not in taken and c.attrs == conv.attrs]
        if by_shape:
            found = theirs.convs[by_shape[0]]
            raise GraphMismatch(f"{where}; the nearest candidate {found.node_name!r} reads "
                                f"{render(found.source, their_names)}")  # fmt: skip
        raise GraphMismatch(where)
    extra = [j for j in range(len(theirs.convs)) if j not in taken]
    if extra:
        found = theirs.convs[extra[0]]
        raise GraphMismatch(f"{what}: the ONNX graph has {len(extra)} more Conv(s) than the model, first "
                            f"{found.node_name!r} ({found.describe()})")  # fmt: skip
    return mapping
