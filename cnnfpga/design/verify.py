"""--verify: run a design on an OpenCL device with its loop counters on, for one image, and check it
against the golden model -- the outputs, and the cycles every stage counted against the model's."""
from __future__ import annotations

import numpy as np

from ..fixed_reference import forward_fixed
from ..precision import Fixed, Float, Half
from ..reference import forward


def verify(graph, design, device=None, seed: int = 0) -> dict:
    """{"device", "outputs" (what was checked, in words), "ok", "max_error", "measured_cycles"
    {layer: counted}, "cycles_equal"} for one seeded random image through `design`."""
    from ..runtime import DeviceNet, half_error_bound
    graph = graph.reshape({name: (1,) + tuple(shape[1:]) for name, shape in graph.inputs.items()})
    rng = np.random.default_rng(seed)
    x = {name: rng.uniform(-1, 1, shape).astype(np.float32) for name, shape in graph.inputs.items()}
    net = DeviceNet(graph, design=design, device=device, count_cycles=True)
    got = net.forward(x)
    plan = net.plan
    written = plan.written_blobs()
    host_fed = plan.host_fed_segments()
    after_host = {plan.blob_names[key] for s in host_fed for key in s.sinks} & set(written)
    formats = {stage.precision.inputs.__class__ for stage in plan.stages} | \
              {stage.precision.outputs.__class__ for stage in plan.stages}
    golden = forward_fixed(plan.graph, x, plan.precisions)
    if formats <= {Fixed} or formats <= {Half}:
        errors = [float(np.abs(got[b] - golden.blobs[b]).max()) for b in written]
        if formats <= {Fixed}:
            steps = {plan.blob_names[key]: 2.0 ** -s.producer(key).precision.outputs.frac_bits
                     for s in plan.segments for key in s.sinks}
            exact = [b for b, e in zip(written, errors) if b not in after_host and e > 0]
            near = [b for b, e in zip(written, errors) if b in after_host and e > steps[b]]
            checked = [stage.name for s in plan.segments if s not in host_fed for stage in s.stages]
            saturation_equal = all(net.saturation()[n] == golden.saturation.get(n, 0) for n in checked)
            ok = not exact and not near and saturation_equal
            outputs = (f"bit-exact with the fixed-point golden model ({len(written) - len(after_host)} blob(s); "
                       f"{len(after_host)} after the host's float layers within one step), saturation counts equal"
                       if ok else f"NOT bit-exact: {', '.join(exact + near) or 'saturation counts'} differ")
        else:
            bound = half_error_bound(plan)
            relative = max(e / max(float(np.abs(golden.blobs[b]).max()), 1e-30) for e, b in zip(errors, written))
            ok, outputs = relative <= bound, f"half within {relative:.2e} of the golden model (bound {bound:.2e})"
        max_error = max(errors, default=0.0)
    else:
        want = forward(graph, x) if formats <= {Float} else golden.blobs
        errors = [float(np.abs(got[b] - want[b]).max() / max(float(np.abs(want[b]).max()), 1e-30)) for b in written]
        max_error = max(errors, default=0.0)
        limit = 1e-4 if formats <= {Float} else 1e-2
        ok = max_error < limit
        outputs = f"relative error {max_error:.2e} against the golden model (limit {limit:g})"
    measured = net.cycles()
    model = {stage.name: design.schedule(stage).cycles(1) for stage in plan.stages}
    return {"device": net.device.name.strip(), "outputs": outputs, "ok": bool(ok), "max_error": max_error,
            "measured_cycles": measured, "model_cycles": model, "cycles_equal": measured == model}
