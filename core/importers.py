"""Bring your own flow: read velocity data in the formats people have into the dataset format.

``read_flow(path, mapping=None)`` returns a validated dataset (:mod:`core.datasets`) from

* **our netCDF** (a ``velocity`` variable with dims ``(sim, time, component, y, x)``): as is;
* **netCDF / HDF5 with other names**: separate ``u`` and ``v`` variables (or one velocity variable
  with a component dimension) over ``(time, y, x)`` or ``(sim, time, y, x)`` in any order. Names
  are recognised from common spellings (``u``/``U``/``ux``/``velocity_x``; ``time``/``t``/
  ``frame``; ``y``/``lat``/``latitude``/``row``; ``x``/``lon``/``longitude``/``col``; ``sim``/
  ``run``/``member``/``sample``...) or given by ``mapping`` (``{"u": "U", "x": "lon"}``, the CLI's
  ``--map u=U,x=lon``); when they cannot be resolved the error lists what the file holds;
* **.npy / .npz** arrays ``[sims, T, 2, H, W]`` or ``[T, 2, H, W]`` (``allow_pickle=False``;
  an .npz gives its ``velocity`` array, its only array, or ``u`` and ``v`` arrays);
* **a folder or .zip of .pt tensors** ``[T, 2, H, W]``, one per simulation, in natural order of
  their names. A .pt file is **never unpickled**: its ``data.pkl`` is read as a list of pickle
  opcodes (``pickletools``), of which only a plain tensor's are accepted (the tensor rebuild
  function, storage types, tuples, numbers), and the numbers are then read from the archive's
  storage record. Anything else in the pickle (any other global, code) is refused.

Defaults of an imported dataset (recorded in its attributes, with the ``source``):

* the time windows are the scenarios' (:func:`core.scenarios.windows`): the *future* split is
  the last start times of every training sim;
* the *domain* split holds out every fifth sim (index % 5 == 4) from 5 sims on, the last sim with
  3 or 4 sims, and none with fewer (``split_note`` says which);
* rows run bottom to top (y up, our convention) as stored; the grid may be non-square (JetFlow's
  62 x 23). Every model trains on it: the zoo is fully convolutional, and its C_n / D_n models
  stay equivariant as maps between an H x W and a W x H grid. What needs a square grid is a
  rotation symmetry *of the data* (a turned frame must fit the same grid): discovery with C_n /
  D_n refuses such data with that reason, and :func:`crop_square` (the CLI's ``--crop-square``)
  is the explicit way to a centred square crop.

Every problem raises :class:`core.datasets.DatasetError` with one line naming the file and what
is wrong: unreadable, truncated, wrong shape, NaN or inf, empty.
"""
from __future__ import annotations

import io
import os
import pickletools
import re
import zipfile
from pathlib import Path

import numpy as np
import xarray as xr

from . import scenarios as sc
from .datasets import DIMS, ENGINE, DatasetError, _to_dataset, validate

__all__ = ["read_flow", "parse_mapping", "crop_square", "describe", "file_names", "FORMATS",
           "ROLES", "read_pt", "stack_velocity"]

FORMATS = {".nc": "netcdf", ".nc4": "netcdf", ".cdf": "netcdf", ".h5": "netcdf",
           ".hdf5": "netcdf", ".he5": "netcdf", ".npy": "npy", ".npz": "npz", ".zip": "pt-zip",
           ".pt": "pt"}
ROLES = ("u", "v", "velocity", "component", "sim", "time", "y", "x")
SPELLINGS = {
    "u": ("u", "ux", "vx", "velocity_x", "u_velocity", "x_velocity", "uwnd", "uvel"),
    "v": ("v", "uy", "vy", "velocity_y", "v_velocity", "y_velocity", "vwnd", "vvel"),
    "velocity": ("velocity", "vel", "uv", "flow"),
    "sim": ("sim", "sims", "run", "member", "sample", "ensemble", "trajectory", "case", "realization"),
    "time": ("time", "t", "frame", "frames", "step", "steps"),
    "y": ("y", "lat", "latitude", "row", "rows", "j", "ny"),
    "x": ("x", "lon", "longitude", "col", "cols", "column", "i", "nx"),
    "component": ("component", "components", "comp", "c", "dim", "vector"),
}


def parse_mapping(text: str | None) -> dict[str, str]:
    """``"u=U,v=V,x=lon,y=lat"`` -> ``{"u": "U", ...}``; roles are those of :data:`ROLES`."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        if not part.strip():
            continue
        role, sep, name = part.partition("=")
        role, name = role.strip(), name.strip()
        if not sep or not name:
            raise DatasetError(f"--map: expected ROLE=NAME pairs, got {part.strip()!r}")
        if role not in ROLES:
            raise DatasetError(f"--map: unknown role {role!r}; valid: {', '.join(ROLES)}")
        out[role] = name
    return out


# ------------------------------------------------------------------------------ entry point
def read_flow(path: str | os.PathLike, mapping: dict[str, str] | None = None) -> xr.Dataset:
    """Read ``path`` (a file or a folder of .pt files) into a validated dataset."""
    path = Path(path)
    mapping = dict(mapping or {})
    if path.is_dir():
        files = sorted(path.glob("*.pt"), key=_natural_key)
        if not files:
            raise DatasetError(f"{path}: a folder must hold .pt files, found none")
        velocity = stack_velocity([_pt_file(f.read_bytes(), str(f)) for f in files], str(path))
        kind = "pt-folder"
    elif not path.is_file():
        raise DatasetError(f"{path}: no such file or folder")
    elif path.stat().st_size == 0:
        raise DatasetError(f"{path}: the file is empty")
    else:
        kind = FORMATS.get(path.suffix.lower())
        if kind is None:
            raise DatasetError(f"{path}: unknown format {path.suffix or '(no suffix)'}; "
                               f"valid: {', '.join(sorted(FORMATS))} or a folder of .pt files")
        if kind == "netcdf":
            ours = _read_netcdf(path, mapping)
            if isinstance(ours, xr.Dataset):
                return ours
            velocity = ours
        elif kind == "npy":
            velocity = _as_velocity(_np_load(path), str(path))
        elif kind == "npz":
            velocity = _read_npz(path, mapping)
        elif kind == "pt":
            velocity = stack_velocity([_pt_file(path.read_bytes(), str(path))], str(path))
        else:
            velocity = _read_pt_zip(path)
    return _standard(velocity, source=str(path), kind=kind, mapping=mapping)


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _standard(velocity: np.ndarray, *, source: str, kind: str, mapping: dict) -> xr.Dataset:
    n, steps, _, h, w = velocity.shape
    if not np.isfinite(velocity).all():
        bad = int((~np.isfinite(velocity)).sum())
        raise DatasetError(f"{source}: {bad} velocity values are NaN or inf")
    if n >= 5:
        domain, note = [i for i in range(n) if i % 5 == 4], "every fifth sim held out (domain)"
    elif n >= 3:
        domain, note = [n - 1], "the last sim held out (domain)"
    else:
        domain, note = [], f"no domain split: {n} sim(s), at least 3 are needed"
    if min(sc.windows(steps)["train"]) == max(sc.windows(steps)["train"]):
        raise DatasetError(f"{source}: {steps} time steps are too few to train on")
    setup = sc.SetUp(inflows=[[]] * n, buoyancy_map=np.ones((h, w), dtype=np.float32),
                     domain_sims=domain)
    ds = _to_dataset(velocity.astype(np.float32, copy=False), setup, scenario=f"imported-{kind}",
                     breaking=float("nan"), seed=-1, steps=steps, grid=(h, w), solver={})
    ds.attrs.update(source=source, source_format=kind, split_note=note,
                    mapping=",".join(f"{k}={v}" for k, v in mapping.items()))
    validate(ds, source)
    return ds


def crop_square(ds: xr.Dataset) -> xr.Dataset:
    """The centred ``n x n`` crop of a dataset, ``n = min(H, W)`` (recorded in ``crop``)."""
    h, w = ds.sizes["y"], ds.sizes["x"]
    n = min(h, w)
    y0, x0 = (h - n) // 2, (w - n) // 2
    out = ds.isel(y=slice(y0, y0 + n), x=slice(x0, x0 + n))
    out = out.assign_coords(y=np.arange(n) + 0.5, x=np.arange(n) + 0.5)
    out.attrs = dict(ds.attrs, grid=np.asarray([n, n], dtype=np.int64),
                     crop=f"centred {n}x{n} of {h}x{w} (rows {y0}..{y0 + n - 1}, columns "
                          f"{x0}..{x0 + n - 1})")
    validate(out, "the cropped dataset")
    return out


def _as_velocity(array: np.ndarray, where: str) -> np.ndarray:
    """[sims, T, 2, H, W] or [T, 2, H, W] as float32 [sims, T, 2, H, W]."""
    if array.dtype.kind not in "fiu":
        raise DatasetError(f"{where}: expected a numeric array, got dtype {array.dtype}")
    if array.ndim == 4:
        array = array[None]
    if array.ndim != 5 or array.shape[2] != 2:
        raise DatasetError(f"{where}: expected an array [sims, T, 2, H, W] or [T, 2, H, W], got "
                           f"{list(array.shape)}")
    if 0 in array.shape:
        raise DatasetError(f"{where}: the array is empty ({list(array.shape)})")
    return np.ascontiguousarray(array, dtype=np.float32)


def stack_velocity(tensors: list[np.ndarray], where: str) -> np.ndarray:
    """One [T, 2, H, W] array per sim -> [sims, T, 2, H, W]; all the same shape."""
    for i, t in enumerate(tensors):
        if t.ndim != 4 or t.shape[1] != 2:
            raise DatasetError(f"{where}: item {i} is {list(t.shape)}, expected [T, 2, H, W]")
        if t.shape != tensors[0].shape:
            raise DatasetError(f"{where}: item {i} is {list(t.shape)}, the first is "
                               f"{list(tensors[0].shape)}")
    return _as_velocity(np.stack(tensors), where)


# ------------------------------------------------------------------------------ numpy
def _np_load(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err):
            raise DatasetError(f"{path}: holds pickled objects, which are never loaded") from None
        raise DatasetError(f"{path}: cannot be read as a numpy file ({err})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise DatasetError(f"{path}: cannot be read as a numpy file ({err}); truncated?") from None


def _read_npz(path: Path, mapping: dict) -> np.ndarray:
    with _np_load(path) as archive:
        keys = list(archive.files)
        try:
            if "velocity" in mapping or "velocity" in keys or len(keys) == 1:
                key = mapping.get("velocity", "velocity" if "velocity" in keys else keys[0])
                return _as_velocity(archive[key], f"{path}[{key}]")
            u, v = mapping.get("u", "u"), mapping.get("v", "v")
            if u in keys and v in keys:
                a, b = archive[u], archive[v]
                if a.shape != b.shape:
                    raise DatasetError(f"{path}: {u} is {list(a.shape)} but {v} is "
                                       f"{list(b.shape)}")
                return _as_velocity(np.stack([a, b], axis=-3), f"{path}[{u},{v}]")
        except KeyError as err:
            raise DatasetError(f"{path}: no array {err}; it holds {', '.join(keys)}") from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise DatasetError(f"{path}: cannot read its arrays ({err}); truncated?") from None
    raise DatasetError(f"{path}: holds {', '.join(keys) or 'no arrays'}; give the velocity "
                       f"array (--map velocity=NAME) or the u and v arrays (--map u=A,v=B)")


# ------------------------------------------------------------------------------ netCDF / HDF5
def _open(path: Path) -> xr.Dataset:
    with open(path, "rb") as f:
        magic = f.read(8)
    if not (magic.startswith(b"\x89HDF") or magic.startswith(b"CDF")):
        raise DatasetError(f"{path}: not a netCDF or HDF5 file")
    try:
        return xr.open_dataset(path, engine=ENGINE, decode_times=False)
    except Exception as err:  # h5py raises many kinds on damaged files
        raise DatasetError(f"{path}: cannot be read as netCDF/HDF5 ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''}); truncated?") from None


def _find(names, role: str, mapping: dict, what: str, where: str):
    if role in mapping:
        if mapping[role] not in names:
            raise DatasetError(f"{where}: --map {role}={mapping[role]}: no {what} of that name; "
                               f"the file has {', '.join(map(str, names)) or 'none'}")
        return mapping[role]
    lower = {str(n).lower(): n for n in names}
    for spelling in SPELLINGS[role]:
        if spelling in lower:
            return lower[spelling]
    return None


def file_names(path: str | os.PathLike) -> dict[str, list[str]]:
    """The names a mapping can refer to: ``variables`` and ``dimensions`` of a netCDF/HDF5 file,
    the arrays (``variables``) of an .npz; empty lists for other formats."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower()) if path.is_file() else None
    if kind == "netcdf":
        with _open(path) as ds:
            return dict(variables=[str(v) for v in ds.data_vars],
                        dimensions=[str(d) for d in ds.dims])
    if kind == "npz":
        with _np_load(path) as archive:
            return dict(variables=list(archive.files), dimensions=[])
    return dict(variables=[], dimensions=[])


def describe(ds: xr.Dataset) -> str:
    """One line listing a file's variables and their dims (for error messages and previews)."""
    return "; ".join(f"{name}{tuple(map(str, var.dims))}" for name, var in ds.data_vars.items())


def _read_netcdf(path: Path, mapping: dict):
    """Our dataset (validated) or a velocity array [sims, T, 2, H, W] from other names."""
    with _open(path) as ds:
        if not mapping and "velocity" in ds and ds["velocity"].dims == DIMS:
            ours = ds.load()
            validate(ours, str(path))
            return ours
        where = str(path)
        u_name = _find(list(ds.data_vars), "u", mapping, "variable", where)
        v_name = _find(list(ds.data_vars), "v", mapping, "variable", where)
        if u_name is not None and v_name is not None:
            if ds[u_name].dims != ds[v_name].dims:
                raise DatasetError(f"{where}: {u_name} has dims {ds[u_name].dims} but {v_name} "
                                   f"has {ds[v_name].dims}")
            parts = [ds[u_name], ds[v_name]]
            dims = list(map(str, ds[u_name].dims))
            component = None
        else:
            vel_name = _find(list(ds.data_vars), "velocity", mapping, "variable", where)
            if vel_name is None:
                raise DatasetError(f"{where}: no u and v variables (or one velocity variable) "
                                   f"recognised; it holds {describe(ds)}; name them with --map "
                                   f"u=NAME,v=NAME")
            dims = list(map(str, ds[vel_name].dims))
            component = _find(dims, "component", mapping, "dimension", where)
            if component is None:
                sized2 = [d for d in dims if ds.sizes[d] == 2]
                if len(sized2) != 1:
                    raise DatasetError(f"{where}: {vel_name}{tuple(dims)}: which dimension holds "
                                       f"(u, v)? give --map component=NAME")
                component = sized2[0]
            parts = [ds[vel_name]]
            dims = [d for d in dims if d != component]
        roles = {}
        for role in ("sim", "time", "y", "x"):
            found = _find(dims, role, mapping, "dimension", where)
            if found is not None:
                roles[role] = found
        rest = [d for d in dims if d not in roles.values()]
        if "sim" not in roles and len(dims) == 4 and len(rest) == 1:
            roles["sim"] = rest[0]  # the one unnamed extra dimension is the simulation
            rest = []
        missing = [r for r in ("time", "y", "x") if r not in roles]
        if missing or rest:
            what = (f"cannot tell which dimension is {', '.join(missing)}" if missing
                    else f"dimension(s) {', '.join(rest)} have no role")
            raise DatasetError(f"{where}: {what}; the variables are {describe(ds)}; give "
                               f"--map time=NAME,y=NAME,x=NAME[,sim=NAME]")
        order = [roles[r] for r in ("sim", "time", "y", "x") if r in roles]
        if len(parts) == 2:  # filled one component at a time: the file's arrays are not all
            first = parts[0].transpose(*order)  # held next to the result at once
            velocity = np.empty((*first.shape[:-2], 2, *first.shape[-2:]), dtype=np.float32)
            for c, part in enumerate(parts):
                velocity[..., c, :, :] = part.transpose(*order).values
        else:
            velocity = parts[0].transpose(*order[:-2], component, *order[-2:]).values
        if "sim" not in roles:
            velocity = velocity[None]
        return _as_velocity(velocity, where)


# ------------------------------------------------------------------------------ .pt (no unpickling)
_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
           "BFloat16Storage": None, "LongStorage": np.int64, "IntStorage": np.int32,
           "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8}
_REBUILD = ("torch._utils", "_rebuild_tensor_v2")


class _Storage:
    def __init__(self, kind: str, key: str):
        self.kind, self.key = kind, key


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, shape: tuple, stride: tuple):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride


def _describe_pickle(data: bytes, where: str) -> _Tensor:
    """The tensor a torch ``data.pkl`` describes, found by reading its opcodes without running
    them; anything but a plain tensor is refused."""
    stack, memo, marks = [], {}, []
    try:
        ops = list(pickletools.genops(data))
    except Exception as err:
        raise DatasetError(f"{where}: damaged tensor description ({err})") from None

    def pop_mark():
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    for op, arg, _ in ops:
        name = op.name
        if name in ("PROTO", "FRAME", "STOP"):
            continue
        if name in ("GLOBAL",):
            module, _, attr = arg.partition(" ")
            stack.append(("global", module, attr))
        elif name == "STACK_GLOBAL":
            attr, module = stack.pop(), stack.pop()
            stack.append(("global", module, attr))
        elif name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "SHORT_BINSTRING",
                      "BINSTRING", "BININT", "BININT1", "BININT2", "LONG1", "INT", "LONG",
                      "BINFLOAT"):
            stack.append(arg)
        elif name == "NONE":
            stack.append(None)
        elif name in ("NEWTRUE", "NEWFALSE"):
            stack.append(name == "NEWTRUE")
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            stack.append(memo[arg])
        elif name == "MARK":
            marks.append(len(stack))
        elif name == "TUPLE":
            stack.append(tuple(pop_mark()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name in ("EMPTY_DICT", "EMPTY_LIST"):
            stack.append({} if name == "EMPTY_DICT" else [])
        elif name in ("SETITEMS", "APPENDS"):
            pop_mark()  # hooks and metadata of the tensor: not needed
        elif name == "BINPERSID":
            pid = stack.pop()
            if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                    and isinstance(pid[1], tuple) and pid[1][0] == "global"):
                raise DatasetError(f"{where}: not a plain tensor file (unexpected record)")
            stack.append(_Storage(pid[1][2], str(pid[2])))
        elif name == "REDUCE":
            args, fn = stack.pop(), stack.pop()
            if fn == ("global", "collections", "OrderedDict"):
                stack.append({})
            elif fn == ("global", *_REBUILD) and len(args) >= 4 \
                    and isinstance(args[0], _Storage):
                stack.append(_Tensor(args[0], int(args[1]), tuple(args[2]), tuple(args[3])))
            else:
                target = ".".join(fn[1:]) if isinstance(fn, tuple) and fn[:1] == ("global",) \
                    else "an object"
                raise DatasetError(f"{where}: holds {target}, not a plain tensor; a .pt file is "
                                   f"never unpickled, so only tensors can be read")
        else:
            raise DatasetError(f"{where}: not a plain tensor file (pickle opcode {name})")
    result = stack[-1] if stack else None
    if not isinstance(result, _Tensor):
        raise DatasetError(f"{where}: does not hold one tensor")
    return result


def read_pt(data: bytes, where: str) -> np.ndarray:
    """A tensor from the bytes of a torch ``.pt`` file (zip format), without unpickling."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise DatasetError(f"{where}: not a torch .pt file (zip format) or truncated") from None
    with archive:
        names = archive.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise DatasetError(f"{where}: not a torch .pt file (no data.pkl)")
        prefix = pkl[:-len("data.pkl")]
        try:
            tensor = _describe_pickle(archive.read(pkl), where)
            dtype = _DTYPES.get(tensor.storage.kind, "unknown")
            if dtype is None or dtype == "unknown":
                raise DatasetError(f"{where}: tensor storage {tensor.storage.kind} is not "
                                   f"supported; save float32 or float64")
            raw = archive.read(f"{prefix}data/{tensor.storage.key}")
        except (KeyError, zipfile.BadZipFile, EOFError, OSError) as err:
            raise DatasetError(f"{where}: damaged or truncated .pt file ({err})") from None
    flat = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    size = np.dtype(dtype).itemsize
    need = tensor.offset + 1 + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride)) \
        if all(tensor.shape) else 0
    if need > flat.size:
        raise DatasetError(f"{where}: storage holds {flat.size} numbers, the tensor needs {need}")
    view = np.lib.stride_tricks.as_strided(flat[tensor.offset:], shape=tensor.shape,
                                           strides=tuple(s * size for s in tensor.stride))
    return np.array(view, dtype=np.float32)


def _pt_file(data: bytes, where: str) -> np.ndarray:
    array = read_pt(data, where)
    if array.ndim != 4 or array.shape[1] != 2:
        raise DatasetError(f"{where}: expected a tensor [T, 2, H, W], got {list(array.shape)}")
    return array


def _read_pt_zip(path: Path) -> np.ndarray:
    try:
        outer = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DatasetError(f"{path}: not a zip file, or truncated") from None
    with outer:
        names = sorted((n for n in outer.namelist() if n.endswith(".pt")),
                       key=lambda n: _natural_key(Path(n)))
        if not names:
            raise DatasetError(f"{path}: the zip holds no .pt files")
        try:
            tensors = [_pt_file(outer.read(n), f"{path}:{n}") for n in names]
        except (zipfile.BadZipFile, EOFError, OSError) as err:
            raise DatasetError(f"{path}: damaged zip ({err})") from None
    return stack_velocity(tensors, str(path))
