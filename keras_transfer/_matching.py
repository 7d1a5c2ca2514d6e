"""Private: which source array goes into which target variable.

A source (a weights file, a `.keras` archive, a model in memory) is a list of
`Group`s of named `Array`s, one group per source layer, as in the legacy HDF5
layout. A target is a list of `Unit`s: the layers that hold weights (nested
models walked into) and the weights a model holds itself. `plan` decides, from
names and shapes alone, which array fills which variable; nothing is read or
assigned here.

Layers match by name: exactly, then with the renames Keras 3 made to
keras.applications (`conv1/conv` -> `conv1_conv`, `Conv` -> `conv`,
`Conv/BatchNorm` -> `conv_bn`), then inside the group of a nested model of the
source. Within a layer, arrays match by variable name when the names identify
them; otherwise by Keras' saved order (trainable first, see
`_layers.saved_order`), accepted only when every shape fits, no array lands
on a variable whose name belongs to another array, and each sublayer takes the
arrays of one source sublayer.
"""

import collections
import dataclasses

import keras
import ml_dtypes
import numpy as np

from keras_transfer import _layers
from keras_transfer import _torch_layout
from keras_transfer import errors

TOP_GROUP = "top_level_model_weights"  # Keras' group for a model's own weights

# Variables Keras 3 renamed in keras.applications layers: {class: {old: new}}.
_ARRAY_RENAMES = {keras.layers.DepthwiseConv2D: {"depthwise_kernel": "kernel"}}
# Layer-name components tf_keras used where Keras 3 uses another word.
_NAME_PARTS = {"batchnorm": "bn"}  # MobileNetV3: `Conv/BatchNorm` -> `conv_bn`


@dataclasses.dataclass(eq=False)
class Array:
    """One source array: where it is, what it is, and how to read it."""

    group: str
    name: str  # as stored, without the ":0" suffix: "conv1/kernel"
    shape: tuple
    dtype: np.dtype
    read: object  # () -> numpy array
    identity: object = None  # the stored object; two names for one array share it
    relative: str = None  # its name in its group, when the layout gives it ("weight")
    origin: str = None  # the file it is in, for a source of several (shards)


@dataclasses.dataclass(eq=False)
class Group:
    """A source layer's arrays, in the order the source lists them."""

    name: str
    arrays: list
    alias: str = None  # for TOP_GROUP: the name of the model that owns it
    layout: str = "keras"  # "torch": a PyTorch module's parameters (`_torch_layout`)


@dataclasses.dataclass(eq=False)
class Unit:
    """A target layer's (or a model's own) variables, in saved order."""

    name: str
    layer: object
    variables: list
    names: list  # each variable's name relative to the layer: "kernel"
    creation_order: list
    own: bool = False  # the weights `layer` (a model) holds itself
    top: bool = False  # ... and `layer` is the target model itself


@dataclasses.dataclass
class Match:
    """A decided load: `pairs` of (variable, Array), and how they were found."""

    unit: Unit
    source: str
    how: str
    pairs: list
    adapted: str = None
    cast: str = None
    converted: str = None  # a PyTorch layout conversion, described
    dropped: tuple = ()  # source arrays with no variable (`num_batches_tracked`)
    cautions: tuple = ()  # what the conversion could not tell


@dataclasses.dataclass
class Plan:
    matches: list
    skipped: dict
    missing: list
    unused: list


class _Problem(Exception):
    """A unit that cannot be loaded; becomes an error or a skipped entry."""

    def __init__(self, error_class, message):
        super().__init__(message)
        self.error_class = error_class


def normalize(name):
    """A layer name as compared across Keras 2 -> 3 renames, and a PyTorch
    module path as a Keras name (`layer1.0.conv1` as `layer1_0_conv1`)."""
    parts = name.lower().replace(".", "/").split("/")
    return "_".join(_NAME_PARTS.get(p, p) for p in parts)


def numpy_dtype(dtype):
    """`dtype` (a Keras dtype name or numpy dtype) as a numpy dtype."""
    if isinstance(dtype, str):
        dtype = getattr(ml_dtypes, dtype, dtype)  # bfloat16, float8_*
    return np.dtype(dtype)


def target_units(model):
    """The units of `model`: layers holding weights, then models' own weights."""
    units = []
    for layer in _layers.units(model):
        # LoRA adapters are not loaded: a checkpoint holds them merged into
        # their kernels (see `_layers.checkpoint_arrays`, `_layers.reset_lora`)
        adapters = {id(v) for sub in _layers.with_sublayers(layer)
                    for v in _layers.lora_adapters(sub)}
        variables = [v for v in _layers.saved_order(layer) if id(v) not in adapters]
        units.append(Unit(
            layer.name, layer, variables,
            [_layers.relative_name(layer, v) for v in variables],
            [v for v in layer.weights if id(v) not in adapters]))
    for container in _layers.containers(model):
        own = _layers.own_weights(container)
        if own:
            held = {id(v) for v in own}
            units.append(Unit(
                container.name, container, own,
                [_layers.relative_name(container, v) for v in own],
                [v for v in container.weights if id(v) in held],
                own=True, top=container is model))
    names = collections.Counter(u.name for u in units)
    clash = [n for n, count in names.items() if count > 1]
    if clash:
        raise errors.DuplicateLayerNameError(
            f"Model '{model.name}' has a nested model and a layer both named "
            f"{clash}, so weights cannot be matched by name. Give each a "
            "unique `name=`.")
    return units


def model_groups(model):
    """A model in memory as a source: one group per unit, as a file has (LoRA
    adapters merged into their kernels, as a checkpoint holds them)."""
    groups = []
    for unit in target_units(model):
        prefix = model.name if unit.top else unit.name
        values = ([(v, lambda v=v: keras.ops.convert_to_numpy(v)) for v in unit.variables]
                  if unit.own else _layers.checkpoint_arrays(unit.layer))
        arrays = [
            Array(TOP_GROUP if unit.top else unit.name,
                  f"{prefix}/{_layers.relative_name(unit.layer, v)}",
                  tuple(v.shape), numpy_dtype(v.dtype), value, identity=id(v))
            for v, value in values]
        if unit.top:
            groups.append(Group(TOP_GROUP, arrays, alias=model.name))
        else:
            groups.append(Group(unit.name, arrays))
    return groups


def relative(array_name, group_name):
    """An array's name relative to its layer's group.

    tf_keras writes `<layer>/kernel`; Keras 3 `<model>/<layer>/kernel`; Keras
    2.0 the name scope (`conv2d_1_1/kernel` in group `conv2d_1`); a layer
    renamed after it was built keeps its old name (`dense/kernel` in group
    `Dense_a`). So: what follows the group's own name, else what follows the
    first component.
    """
    parts = array_name.split("/")
    own = group_name.split("/")
    for k in range(len(parts) - len(own)):
        if parts[k:k + len(own)] == own:
            return "/".join(parts[k + len(own):])
    return "/".join(parts[1:]) if len(parts) > 1 else array_name


def relative_of(array, group_name):
    """`array`'s name in its group: as its layout gives it, else `relative`."""
    return array.relative if array.relative is not None else relative(array.name, group_name)


def plan(units, groups, source_of, *, models=None, skip_mismatch=False,
         adapt=frozenset(), where="", model_inputs=()):
    """Decides every load, or raises; see the module docstring.

    Args:
        units: the target's `Unit`s.
        groups: the source's `Group`s.
        source_of: target layer name -> source layer name (`rename=`).
        models: the target's nested models, {name: names of the layers in
            it}: a source group of such a name (after `rename=`) is read as
            that model's even when it holds one layer's arrays (see
            `_nested`), for its own layers only.
        skip_mismatch: report units that cannot load instead of raising.
        adapt: names of units whose kernels may differ in input channels.
        where: the source, for messages ("x.h5", "model 'resnet50'").
        model_inputs: the target model's input tensors (for PyTorch layouts:
            see `_torch_layout.convert`).

    Returns:
        A `Plan`.
    """
    groups = [g for g in groups if g.arrays]
    torch = any(g.layout == "torch" for g in groups)
    found, problems = _find_sources(units, groups, source_of, models or {}, where)
    if torch:
        problems.update(_several_modules(units, groups, source_of, found, problems, where))
    matches, skipped = [], {}
    for unit in units:
        try:
            if unit.name in problems:
                raise problems[unit.name]
            if unit.name in found and torch:
                matches.append(_match_torch(unit, *found[unit.name], adapt, where,
                                            model_inputs))
            elif unit.name in found:
                matches.append(_match_arrays(unit, *found[unit.name], adapt, where))
        except _Problem as problem:
            if not skip_mismatch:
                raise problem.error_class(
                    f"{problem} Pass skip_mismatch=True to skip it, or "
                    "rename=... to take it from another layer.") from None
            skipped[unit.name] = str(problem)
    missing = [u.name for u in units if u.name not in found
               and u.name not in problems]
    return Plan(matches, skipped, missing, _unused(groups, matches))


def _find_sources(units, groups, source_of, models, where):
    """unit name -> (source label, layer-level how, [(Array, relative name)])."""
    found, problems = {}, {}
    by_name = {g.name: g for g in groups if g.name != TOP_GROUP}
    by_norm = collections.defaultdict(list)
    for g in by_name.values():
        by_norm[normalize(g.name)].append(g)
    top = next((g for g in groups if g.name == TOP_GROUP), None)
    layers = [u for u in units if not u.own]

    def take(unit, label, how, arrays):
        found[unit.name] = (label, how, arrays)

    claimed = set()
    for unit in layers:  # 1. the same name (or the one rename= gives)
        name = source_of(unit.name)
        if name in by_name:
            group = by_name[name]
            take(unit, name, "renamed" if name != unit.name else None,
                 [(a, relative_of(a, name)) for a in group.arrays])
            claimed.add(name)
    wanted = collections.defaultdict(list)
    for unit in layers:  # 2. the same name across Keras 2 -> 3 renames
        if unit.name in found:
            continue
        name = source_of(unit.name)
        candidates = [g for g in by_norm.get(normalize(name), ())
                      if g.name not in claimed]
        if len(candidates) > 1:
            problems[unit.name] = _Problem(errors.WeightMatchError, (
                f"Layer '{unit.name}' could load from any of "
                f"{[g.name for g in candidates]} in {where} (names differing "
                "only in case or '/'); name one with rename=."))
        elif candidates:
            wanted[candidates[0].name].append(unit)
    for group_name, rivals in wanted.items():
        if len(rivals) > 1:
            for unit in rivals:
                problems[unit.name] = _Problem(errors.WeightMatchError, (
                    f"Layers {[u.name for u in rivals]} all match '{group_name}'"
                    f" in {where} once case and '/' are ignored; name the "
                    "source of each with rename=."))
            continue
        group = by_name[group_name]
        take(rivals[0], group_name, "normalized",
             [(a, relative_of(a, group_name)) for a in group.arrays])
        claimed.add(group_name)
    pending = [u for u in layers if u.name not in found and u.name not in problems]
    members = collections.defaultdict(set)  # rename= may map two models to one
    boundaries = collections.defaultdict(set)  # the same, by normalized name
    for name, held in models.items():
        members[source_of(name)] |= held
        boundaries[normalize(source_of(name))] |= held
    inside = collections.defaultdict(list)
    for group in by_name.values():
        if group.name in claimed:
            continue
        # A nested model's group is open to every pending layer; one layer's
        # arrays in the group of a nested model of the target (a model
        # holding one weighted layer) only to the layers in that model.
        offered = pending if _nested(group) else [
            u for u in pending if u.name in members.get(group.name, ())]
        if offered:
            for name, hits in _inside_nested_group(offered, group, source_of,
                                                   boundaries).items():
                inside[name].extend(hits)
    rivals = collections.Counter(normalize(source_of(u.name)) for u in pending)
    taken = set()
    for unit in pending:  # 3. inside the group of a nested model
        hits = inside.get(unit.name, [])
        homes = list(dict.fromkeys(g for g, _, _, _ in hits))
        if homes and rivals[normalize(source_of(unit.name))] > 1:
            problems[unit.name] = _Problem(errors.WeightMatchError, (
                f"Several layers match '{hits[0][2]}' in {where} once case and "
                "'/' are ignored; name the source of each with rename=."))
        elif len(homes) > 1:
            problems[unit.name] = _Problem(errors.WeightMatchError, (
                f"Layer '{unit.name}' has arrays in several nested models of "
                f"{where}: {homes}; name the one to use with rename=."))
        elif homes:
            take(unit, f"{homes[0]}/{hits[0][2]}", f"in '{homes[0]}'",
                 [(a, rel) for _, a, _, rel in hits])
            taken.update(id(a) for _, a, _, _ in hits)
    for unit in units:  # 4. a model's own weights
        if not unit.own:
            continue
        name = source_of(unit.name)
        group = by_name.get(name)
        if group is None and len(by_norm.get(normalize(name), ())) == 1:
            group = by_norm[normalize(name)][0]
        # Keras names a model's own weight `<model>/<weight>`; the rest of a
        # nested model's group belongs to its layers.
        left = [a for a in group.arrays if id(a) not in taken
                and group.name in a.name.split("/")[:-1]] if group else []
        if left:
            take(unit, group.name, None, [(a, relative(a.name, group.name))
                                          for a in left])
        elif top is not None and (unit.top or top.alias == name):
            take(unit, TOP_GROUP, None,
                 [(a, relative(a.name, TOP_GROUP)) for a in top.arrays])
    return found, problems


def _nested(group):
    """True if `group` can be a nested model's: it holds arrays of two or more
    layers (its own weights count as one). A group holding one layer's arrays
    under another name (`dense/kernel` in group `Dense_a`) is a layer renamed
    after it was built, not a model holding a layer `dense` (unless the
    target nests a model `Dense_a`: see `plan`'s `models`). (A nested model
    group of ours reaches here holding only the model's own weights: its
    links to its layers' arrays are dropped in `_h5.read_groups`.)"""
    own = group.name.split("/")
    layers = set()
    for array in group.arrays:
        parts = array.name.split("/")[:-1]
        # after the group's own name (Keras 3: `base/Dense_a/kernel`), else first
        after = [parts[k + len(own)] for k in range(len(parts) - len(own))
                 if parts[k:k + len(own)] == own]
        layers.update(after[:1] or parts[:1] or [""])
    return len(layers) > 1


def _inside_nested_group(units, group, source_of, boundaries):
    """unit name -> [(group name, Array, layer name, name after it)]: the
    arrays of `group` whose names hold the unit's (source) name. A nested model's group
    in a tf_keras file holds `Dense_a/kernel`, in a Keras 3 file
    `base/Dense_a/kernel`, or, for a model `block` nested in `base`,
    `block/Dense_a/kernel` (Keras 3 names a variable by the models it was
    built in). So a layer's name is looked for at the start, after the
    group's own name, and after the (source) name of a nested model of the
    target that holds the layer (`boundaries`: normalized source name ->
    names of the target layers inside); not after any other part, where `conv` would take the
    arrays of a Keras 2 layer `conv1/conv`. Each array goes to the unit with
    the longest matching name: `Conv/BatchNorm/gamma` to `conv_bn`, not to
    `conv`."""
    wanted = collections.defaultdict(list)
    for unit in units:
        wanted[normalize(source_of(unit.name))].append(unit)
    found = collections.defaultdict(list)
    own = group.name.split("/")
    for array in group.arrays:
        parts = array.name.split("/")
        # (where a layer's name may start, the units it may then be; None: any)
        starts = [(0, None)] + [(k + len(own), None) for k in range(len(parts))
                                if parts[k:k + len(own)] == own]
        starts += [(k + 1, boundaries[normalize(parts[k])]) for k in range(len(parts) - 1)
                   if normalize(parts[k]) in boundaries]
        best = None
        for j, allowed in starts:
            for i in range(j + 1, len(parts)):
                layer = "/".join(parts[j:i])
                takers = [u for u in wanted.get(normalize(layer), ())
                          if allowed is None or u.name in allowed]
                if takers and (best is None or i - j > best[1] - best[0]):
                    best = (j, i, layer, takers)
        if best:
            j, i, layer, takers = best
            for unit in takers:
                found[unit.name].append((group.name, array, layer, "/".join(parts[i:])))
    return found


def _several_modules(units, groups, source_of, found, problems, where):
    """Problems for target layers that hold several weighted layers (a
    transformer block) and are not loaded, while modules under their name
    are in the PyTorch source: the generic path loads one module per layer."""
    out = {}
    for unit in units:
        if unit.own or unit.name in found or unit.name in problems:
            continue
        prefix = normalize(source_of(unit.name)) + "_"
        modules = [g.name for g in groups if normalize(g.name).startswith(prefix)]
        if not modules:
            continue
        try:
            _torch_layout.rule_for(unit.layer)
        except _torch_layout.LayoutProblem as problem:
            out[unit.name] = _Problem(problem.error_class, (
                f"Cannot load {problem} from {where}, which has modules "
                f"{modules[:4]}{' ...' if len(modules) > 4 else ''} under its name."))
    return out


def _match_torch(unit, label, layer_how, found, adapt, where, model_inputs):
    """A PyTorch module's parameters into `unit`, converted for its class."""
    what = f"layer '{unit.name}'" + (f" from '{label}'" if label != unit.name else "")
    params = {rel: array for array, rel in found}
    try:
        moves, dropped, described, cautions = _torch_layout.convert(
            unit.layer, {p: a.shape for p, a in params.items()}, model_inputs)
    except _torch_layout.LayoutProblem as problem:
        raise _Problem(problem.error_class, f"Cannot load {what} in {where}: {problem}.") from None
    leaves = [_leaf(n) for n in unit.names]
    lacking = [n for n, leaf in zip(unit.names, leaves) if leaf not in moves]
    extra = [params[p].name for v, (p, _, _) in moves.items() if v not in leaves]
    if lacking or extra or len(set(leaves)) != len(leaves):
        detail = ([f"the layer's {lacking} have no parameter in the source (a module built "
                   "with bias=False? build the layer with use_bias=False)"] if lacking else []) \
            + ([f"the source's {extra} have no variable in the layer (a bias the layer "
                "lacks? use_bias differs?)"] if extra else [])
        raise _Problem(errors.ShapeMismatchError, (
            f"Cannot load {what} in {where}: the PyTorch module has "
            f"{sorted(params)}, the layer has {unit.names}"
            + (f"; {'; '.join(detail)}" if detail else "") + "."))
    pairs = []
    for variable, leaf in zip(unit.variables, leaves):
        param, transform, shape = moves[leaf]
        source = params[param]
        pairs.append((variable, Array(
            source.group, source.name, shape, source.dtype,
            lambda r=source.read, t=transform: t(r()), relative=param)))
    adapted = _check_shapes(unit, pairs, adapt, what, where)
    return Match(unit, label, ", ".join(filter(None, [layer_how, "PyTorch layout"])), pairs,
                 adapted=", ".join(adapted) or None, cast=_casts(pairs),
                 converted=described, dropped=tuple(params[p].name for p in dropped),
                 cautions=tuple(cautions))


def _key(name, layer=None):
    key = name.lower()
    for cls, renames in _ARRAY_RENAMES.items():
        if layer is not None and isinstance(layer, cls):
            head, _, leaf = key.rpartition("/")
            if leaf in renames:
                key = f"{head}/{renames[leaf]}" if head else renames[leaf]
    return key


def _leaf(key):
    return key.rsplit("/", 1)[-1]


def _match_arrays(unit, label, layer_how, found, adapt, where):
    arrays = [a for a, _ in found]
    source_keys = [_key(rel, unit.layer) for _, rel in found]
    target_keys = [_key(n) for n in unit.names]
    what = f"layer '{unit.name}'" + (f" from '{label}'" if label != unit.name else "")
    if len(arrays) != len(unit.variables):
        raise _Problem(errors.ShapeMismatchError, _count_message(
            unit, label, where, arrays, source_keys, target_keys))
    order = _by_names(target_keys, source_keys)
    arrays_how = "by name"
    if order is None:
        order = _by_order(unit, arrays, source_keys, target_keys, adapt, what, where)
        arrays_how = "by order"
    pairs = [(unit.variables[t], arrays[s]) for t, s in order]
    adapted = _check_shapes(unit, pairs, adapt, what, where)
    renamed = sorted({f"{rel} as {_key(rel, unit.layer)}" for _, rel in found
                      if _key(rel, unit.layer) != rel.lower()})
    if renamed and arrays_how == "by name":
        arrays_how += f" ({', '.join(renamed)})"
    return Match(unit, label, ", ".join(filter(None, [layer_how, arrays_how])),
                 pairs, adapted=", ".join(adapted) or None, cast=_casts(pairs))


def _check_shapes(unit, pairs, adapt, what, where):
    """The input-channel adaptations `pairs` need, or a `_Problem` for a
    shape that does not fit."""
    adapted = []
    for variable, array in pairs:
        have, want = tuple(array.shape), tuple(variable.shape)
        if have == want:
            continue
        if unit.name in adapt and _adaptable(variable, array):
            adapted.append(f"input channels {have[-2]} -> {want[-2]}")
            continue
        raise _Problem(errors.ShapeMismatchError, (
            f"Cannot load {what} in {where}: '{array.name}' has shape {have}, "
            f"the model's '{variable.path}' expects {want}."))
    return adapted


def _casts(pairs):
    casts = sorted({f"{a.dtype} -> {numpy_dtype(v.dtype)}" for v, a in pairs
                    if not np.can_cast(a.dtype, numpy_dtype(v.dtype), "safe")})
    return ", ".join(casts) or None


def _by_names(target_keys, source_keys):
    """[(target index, source index)] when names identify every array."""
    if len(set(target_keys)) != len(target_keys) or len(set(source_keys)) != len(source_keys):
        return None
    if set(target_keys) == set(source_keys):
        where = {k: i for i, k in enumerate(source_keys)}
        return [(t, where[k]) for t, k in enumerate(target_keys)]
    # one name a suffix of the other: `kernel` in a tf_keras TimeDistributed
    # group is `dense/kernel` in Keras 3's.
    order = []
    for t, tk in enumerate(target_keys):
        hits = [s for s, sk in enumerate(source_keys)
                if sk == tk or sk.endswith("/" + tk) or tk.endswith("/" + sk)]
        if len(hits) != 1:
            return None
        order.append((t, hits[0]))
    if len({s for _, s in order}) != len(order):
        return None
    return order


def _by_order(unit, arrays, source_keys, target_keys, adapt, what, where):
    """[(target index, source index)] pairing the source's order with the
    target's saved order (or its creation order), with every shape checked."""
    position = {id(v): i for i, v in enumerate(unit.variables)}
    outcomes, conflicts = {}, []
    for order in (unit.variables, unit.creation_order):
        pairs = [(position[id(v)], s) for s, v in enumerate(order)]
        conflict = _order_conflict(unit, arrays, pairs, source_keys, target_keys, adapt)
        if conflict:
            conflicts.append(conflict)
        else:
            outcomes[tuple(pairs)] = pairs
    if len(outcomes) == 1:
        return next(iter(outcomes.values()))
    if not outcomes:
        error_class, reason = conflicts[0]
        raise _Problem(error_class, (
            f"Cannot load {what} in {where}: its arrays "
            f"{[a.name for a in arrays]} do not match the variables "
            f"{unit.names} by name, and by position {reason}."))
    raise _Problem(errors.WeightMatchError, (
        f"Cannot load {what} in {where} unambiguously: its arrays "
        f"{[a.name for a in arrays]} do not match the variables {unit.names} "
        "by name, and two orders of the variables (saved order, creation "
        "order) both fit their shapes."))


def _order_conflict(unit, arrays, pairs, source_keys, target_keys, adapt):
    """(error class, why) pairing by `pairs` is wrong, or None: an array
    going into a variable whose name another array has, a sublayer taking
    arrays of two source sublayers (or two taking one's), or a shape that
    does not fit."""
    source_leaves = {_leaf(k) for k in source_keys}
    target_leaves = {_leaf(k) for k in target_keys}
    for t, s in pairs:
        tk, sk = target_keys[t], source_keys[s]
        names_disagree = (tk != sk and (sk in target_keys or tk in source_keys)) or (
            _leaf(tk) != _leaf(sk)
            and (_leaf(sk) in target_leaves or _leaf(tk) in source_leaves))
        if names_disagree:
            return errors.WeightMatchError, (
                f"'{arrays[s].name}' would go into '{unit.names[t]}', which the "
                "names contradict")
    mixed = _mixed_sublayers(pairs, source_keys, target_keys)
    if mixed:
        return errors.WeightMatchError, mixed
    for t, s in pairs:
        variable, array = unit.variables[t], arrays[s]
        if tuple(array.shape) != tuple(variable.shape) and not (
                unit.name in adapt and _adaptable(variable, array)):
            return errors.ShapeMismatchError, (
                f"'{array.name}' {tuple(array.shape)} would go into "
                f"'{unit.names[t]}' {tuple(variable.shape)}")
    return None


def _sublayer(key):
    return key.rpartition("/")[0]


def _mixed_sublayers(pairs, source_keys, target_keys):
    """Why pairing by `pairs` mixes sublayers, or None.

    Each target sublayer must take the arrays of one source sublayer, and each
    source sublayer give to one target sublayer. A file saved with part of a
    layer frozen lists it trainable first as flagged then, e.g. `[bn_1/gamma,
    bn_1/beta, bn/gamma, bn/beta, bn/moving_mean, ...]`; by position a
    sublayer would take gamma from one sublayer and moving_mean from another.
    A source whose names hold no sublayers says nothing here.
    """
    if len({_sublayer(k) for k in source_keys}) < 2:
        return None
    source_of, target_of = {}, {}
    for t, s in pairs:
        tp, sp = _sublayer(target_keys[t]), _sublayer(source_keys[s])
        if source_of.setdefault(tp, sp) != sp:
            mixed = (f"'{tp or '(the layer itself)'}' would take arrays of both "
                     f"'{source_of[tp]}' and '{sp}'")
        elif target_of.setdefault(sp, tp) != tp:
            mixed = (f"arrays of '{sp}' would go into both '{target_of[sp]}' and "
                     f"'{tp or '(the layer itself)'}'")
        else:
            continue
        return (f"{mixed}, as when the source was saved with part of the "
                "layer frozen (Keras then lists its trainable arrays first); "
                "save the source again with the whole layer trainable")
    return None


def _adaptable(variable, array):
    have, want = tuple(array.shape), tuple(variable.shape)
    return (_leaf(variable.path) == "kernel" and len(want) >= 3
            and len(have) == len(want) and have[:-2] == want[:-2]
            and have[-1] == want[-1])


def _count_message(unit, label, where, arrays, source_keys, target_keys):
    extra = [a.name for a, k in zip(arrays, source_keys) if k not in target_keys]
    lacking = [n for n, k in zip(unit.names, target_keys) if k not in source_keys]
    detail = []
    if extra:
        detail.append(f"the source's {extra} have no variable in the layer"
                      " (a bias the layer lacks? use_bias differs?)")
    if lacking:
        detail.append(f"the layer's {lacking} have no array in the source")
    return (
        f"Cannot load layer '{unit.name}' from '{label}' in {where}: the source "
        f"has {len(arrays)} arrays {[a.name for a in arrays]}, the layer has "
        f"{len(unit.variables)} variables {unit.names}"
        + (f"; {'; '.join(detail)}" if detail else "") + ".")


def _unused(groups, matches):
    used = {id(a) for m in matches for _, a in m.pairs}
    # a PyTorch layout's pairs hold converted copies of the source's arrays
    taken = {a.name for m in matches for _, a in m.pairs} | {
        name for m in matches for name in m.dropped}
    unused = []
    for group in groups:
        if group.layout == "torch":  # keys, as a state_dict names them
            unused.extend(a.name for a in group.arrays if a.name not in taken)
            continue
        left = [a for a in group.arrays if id(a) not in used]
        if len(left) == len(group.arrays):
            unused.append(group.name)
        elif left:  # part of a nested model's group
            heads = dict.fromkeys(relative(a.name, group.name).split("/")[0] for a in left)
            unused.extend(f"{group.name}/{h}" for h in heads)
    return unused
