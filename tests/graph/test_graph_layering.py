"""mindpet.graph works on parameter names only: it imports neither mindpet.delta nor mindpet.kernels."""
import ast
import pathlib

import mindpet.graph


def test_graph_does_not_import_delta_or_kernels():
    package = pathlib.Path(mindpet.graph.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert len(modules) >= 4
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith(("mindpet.delta", "mindpet.kernels")), f"{path.name} imports {name}"
