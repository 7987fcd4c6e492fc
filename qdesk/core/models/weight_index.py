"""Check a folder's weight index before transformers sees the folder.

transformers follows ``model.safetensors.index.json`` wherever it points: an
index that maps tensors to ``pytorch_model.bin`` makes it unpickle that file,
and a path with ``..`` reads outside the folder. qdesk's rule is safetensors
only, so every file the index names must be a ``.safetensors`` file directly in
the folder, with a valid header (``safetensors_check``) that holds the tensors
the index says it does.
"""

from __future__ import annotations

import json
from pathlib import Path

from qdesk.core.errors import BadInput


def check_weight_index(folder: Path, headers: dict[str, dict[str, dict]]) -> None:
    """Raise BadInput unless the folder's safetensors index (if any) names only
    safetensors files in ``folder`` and tensors they hold.

    ``headers``: file name -> that file's validated tensor records."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if not index.exists():
        return
    where = f"{index}"
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BadInput(f"{where}: not readable JSON ({' '.join(str(e).split())[:120]})") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise BadInput(f"{where}: no weight_map table of tensor names to files")
    for tensor, name in weight_map.items():
        if not isinstance(name, str) or not isinstance(tensor, str):
            raise BadInput(f"{where}: tensor {str(tensor)[:80]!r} maps to {str(name)[:80]!r}, not a file name")
        if "/" in name or "\\" in name or name in (".", "..") or Path(name).is_absolute():
            raise BadInput(f"{where}: {tensor} lies in {name!r}, outside the model folder; "
                           "qdesk reads only files in the folder")
        if not name.endswith(".safetensors"):
            raise BadInput(f"{where}: {tensor} lies in {name!r}, not a .safetensors file; "
                           "qdesk loads safetensors only, since unpickling can run code")
        if name not in headers:
            raise BadInput(f"{where}: {tensor} lies in {name}, which is not in the folder")
        if tensor not in headers[name]:
            raise BadInput(f"{where}: {tensor} is not in {name} (a damaged or mixed-up index)")


def refuse_missing_tensors(folder: Path, missing) -> None:
    """transformers filled these parameters with random values (they are not in
    the files): refuse, naming them, rather than run a partly random model."""
    missing = sorted(str(k) for k in missing)
    if not missing:
        return
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    raise BadInput(f"{folder}: the weight files lack {len(missing)} of the model's tensors "
                   f"({shown}); a damaged or incomplete download?")
