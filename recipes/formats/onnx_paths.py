"""Keep the build machine's paths out of exported ONNX graphs.

torch's ONNX exporter records each node's Python stack trace in the node's metadata
("pkg.torch.onnx.stack_trace"): absolute paths of the interpreter's site-packages and of the
checkout. Two builds of the same model from virtualenvs in different places (two team members,
a Ray node, CI) then wrote different bytes for the same graph. The trace only helps debug the
exporter, so it is dropped; the other metadata (module names, scopes) does not depend on where
the build ran and stays.
"""
from __future__ import annotations

from pathlib import Path

HOST_DEPENDENT_KEYS = ("pkg.torch.onnx.stack_trace",)


def strip_host_paths(path: Path) -> None:
    """Rewrite the ONNX file at `path` without the host-dependent node metadata (in place)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graphs = [model.graph] + [f for f in model.functions]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            keep = [p for p in node.metadata_props if p.key not in HOST_DEPENDENT_KEYS]
            if len(keep) != len(node.metadata_props):
                del node.metadata_props[:]
                node.metadata_props.extend(keep)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)
    onnx.save(model, str(path))
