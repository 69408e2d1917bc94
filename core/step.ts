/**
 * A step records many dispatches into one command buffer and submits them together.
 *
 * Every wait for the GPU costs ~10 ms in Deno (docs/webgpu.md §2), so the unit of execution is a
 * step (a forward pass, a Jacobi iteration, a training step, or several), not an op:
 * - per-dispatch parameters are packed into a CPU-side arena and uploaded with one queue write
 *   before the submit; each dispatch binds its slice through a dynamic uniform offset;
 * - bind groups are cached by (kernel, buffers), so replaying the same step creates nothing;
 * - the step's error scopes are checked at the next readback, and a failed step is replayed one
 *   dispatch at a time to name the kernel that failed.
 *
 * @module
 */

import { type Gpu, GpuError } from "./device.ts";
import { compileKernel, type KernelSpec, type Variant } from "./kernel.ts";
import { Tensor } from "./tensor.ts";

/** A binding argument: a whole tensor, or a byte range of one. */
export type BindingArg = Tensor | { tensor: Tensor; offset: number; size: number };

/** Arguments of one dispatch. */
export interface DispatchArgs<V extends Variant = Variant> {
  /** Compile-time variant (default `{}`), typed by the kernel's spec. */
  variant?: V;
  /** Tensors for each storage binding, by binding name. */
  bindings: Record<string, BindingArg>;
  /** Scalar parameters by name; every declared parameter must be given. */
  params?: Record<string, number>;
  /** Number of workgroups in x, y, z. */
  workgroups: readonly [number, number?, number?];
}

interface RecordedDispatch {
  label: string;
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  paramOffset: number;
  workgroups: [number, number, number];
}

/** Slot size in the parameter arena (WebGPU's default minUniformBufferOffsetAlignment). */
const ARENA_BYTES = 1 << 20;

interface Arena {
  buffer: GPUBuffer;
  cpu: ArrayBuffer;
  u32: Uint32Array;
  i32: Int32Array;
  f32: Float32Array;
}

function arenaOf(gpu: Gpu): Arena {
  let arena = gpu.caches.get("arena") as Arena | undefined;
  if (!arena) {
    const cpu = new ArrayBuffer(ARENA_BYTES);
    arena = {
      buffer: gpu.device.createBuffer({
        label: "param arena",
        size: ARENA_BYTES,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      }),
      cpu,
      u32: new Uint32Array(cpu),
      i32: new Int32Array(cpu),
      f32: new Float32Array(cpu),
    };
    gpu.caches.set("arena", arena);
  }
  return arena;
}

let openSteps = 0;

const bufferIds = new WeakMap<GPUBuffer, number>();
let nextBufferId = 1;
/** A stable id per GPU buffer, so tensor views of one buffer share cached bind groups. */
function bufferId(buffer: GPUBuffer): number {
  let id = bufferIds.get(buffer);
  if (id === undefined) bufferIds.set(buffer, id = nextBufferId++);
  return id;
}

/** Per-kernel GPU time of a step, from timestamp queries. */
export interface KernelTiming {
  /** Kernel label. */
  label: string;
  /** Nanoseconds between the start and end of its compute pass. */
  ns: number;
}

/**
 * Records dispatches into one command encoder; `submit()` sends them with a single queue submit.
 *
 * @example A step with two dispatches and one readback
 * ```ts ignore
 * import { requestGpu, Step, Tensor, readTensors } from "../core/mod.ts";
 * const gpu = await requestGpu();
 * const step = new Step(gpu, "example");
 * step.dispatch(someSpec, { bindings: { x, y }, params: { n: 4 }, workgroups: [1] });
 * step.submit();
 * const [y] = await readTensors(gpu, [out]);
 * ```
 */
export class Step {
  /** The device. */
  readonly gpu: Gpu;
  /** Name used in error messages. */
  readonly label: string;
  readonly #encoder: GPUCommandEncoder;
  #pass: GPUComputePassEncoder | null = null;
  readonly #dispatches: RecordedDispatch[] = [];
  #arenaUsed = 0;
  readonly #paramSlots = new Map<string, number>();
  #submitted = false;
  readonly #timing: { querySet: GPUQuerySet; labels: string[]; capacity: number } | null;

  /**
   * Opens a step. One step records at a time: submit it before opening the next.
   *
   * @param gpu the device
   * @param label name for errors
   * @param options `timing: n` records per-kernel timestamps for up to n dispatches (one compute pass
   *   per dispatch, which costs a little; use it to profile, not in hot loops)
   */
  constructor(gpu: Gpu, label: string, options: { timing?: number } = {}) {
    // The parameter arena and the error scopes are shared, so one step records at a time.
    if (openSteps > 0) throw new Error(`Step "${label}" opened while another step is still recording`);
    this.gpu = gpu;
    this.label = label;
    gpu.device.pushErrorScope("out-of-memory");
    gpu.device.pushErrorScope("validation");
    openSteps++;
    this.#encoder = gpu.device.createCommandEncoder({ label });
    if (options.timing && gpu.features.timestamps) {
      const capacity = options.timing;
      this.#timing = {
        querySet: gpu.device.createQuerySet({
          label: `${label} timing`,
          type: "timestamp",
          count: capacity * 2,
        }),
        labels: [],
        capacity,
      };
    } else {
      this.#timing = null;
    }
  }

  /** Number of dispatches recorded so far. */
  get dispatchCount(): number {
    return this.#dispatches.length;
  }

  /**
   * Records one dispatch of a kernel. Host-side checks (missing bindings or parameters, too many
   * workgroups, a tensor too small for its binding range) throw at once, naming the kernel; the
   * step is then abandoned (nothing of it runs), so the next step can open.
   */
  dispatch<V extends Variant>(spec: KernelSpec<V>, args: DispatchArgs<V>): void {
    if (this.#submitted) throw new Error(`Step "${this.label}" was already submitted`);
    try {
      this.#dispatch(spec, args);
    } catch (e) {
      this.abandon();
      throw e;
    }
  }

  /**
   * Drops everything recorded and closes the step without running it, so that another step can
   * open: for a recorder whose host-side check threw before `submit()`. Does nothing once the step
   * was submitted or abandoned.
   *
   * @example Recording that may throw
   * ```ts ignore
   * const step = new Step(gpu, "layer");
   * try {
   *   record(step);
   * } catch (e) {
   *   step.abandon();
   *   throw e;
   * }
   * step.submit();
   * ```
   */
  abandon(): void {
    if (this.#submitted) return;
    this.#submitted = true;
    this.#endPass();
    this.#timing?.querySet.destroy();
    // The error scopes were pushed by the constructor; nothing was submitted inside them.
    const device = this.gpu.device;
    device.popErrorScope().catch(() => {});
    device.popErrorScope().catch(() => {});
    openSteps--;
  }

  #dispatch<V extends Variant>(spec: KernelSpec<V>, args: DispatchArgs<V>): void {
    const gpu = this.gpu;
    const kernel = compileKernel(gpu, spec, args.variant ?? ({} as V));
    const [x, y = 1, z = 1] = args.workgroups;
    const maxWg = gpu.limits.maxComputeWorkgroupsPerDimension;
    for (const n of [x, y, z]) {
      if (!Number.isInteger(n) || n < 0 || n > maxWg) {
        throw new GpuError(
          `Kernel ${kernel.label} in step "${this.label}": workgroup count [${x}, ${y}, ${z}] is invalid ` +
            `(each must be an integer in 0..${maxWg})`,
          kernel.label,
        );
      }
    }
    // Parameters: a 256-byte slot of the arena per distinct (kernel, values) in this step, so a
    // step that repeats a forward many times reuses the slots of identical dispatches.
    const arena = arenaOf(gpu);
    const align = Math.max(256, gpu.limits.minUniformBufferOffsetAlignment);
    const params = args.params ?? {};
    let paramKey = `${kernel.id}`;
    for (const p of spec.params) {
      const v = params[p.name];
      if (typeof v !== "number" || Number.isNaN(v)) {
        throw new GpuError(
          `Kernel ${kernel.label}: parameter "${p.name}" is missing or not a number`,
          kernel.label,
        );
      }
      paramKey += `,${v}`;
    }
    let offset = this.#paramSlots.get(paramKey);
    if (offset === undefined) {
      offset = this.#arenaUsed;
      if (offset + align > ARENA_BYTES) {
        throw new Error(
          `Step "${this.label}" has more than ${ARENA_BYTES / align} distinct dispatches; split it`,
        );
      }
      this.#arenaUsed += align;
      this.#paramSlots.set(paramKey, offset);
      spec.params.forEach((p, i) => {
        const v = params[p.name];
        const index = offset! / 4 + i;
        if (p.type === "f32") arena.f32[index] = v;
        else if (p.type === "i32") arena.i32[index] = v;
        else arena.u32[index] = v;
      });
    }
    // Bind group: cached by kernel and exact buffer ranges.
    const entries: GPUBindGroupEntry[] = [{
      binding: 0,
      resource: { buffer: arena.buffer, size: kernel.paramBytes },
    }];
    let key = `${kernel.id}`;
    kernel.bindings.forEach((b, i) => {
      const arg = args.bindings[b.name];
      if (!arg) {
        throw new GpuError(`Kernel ${kernel.label}: binding "${b.name}" was not given`, kernel.label);
      }
      const tensor = arg instanceof Tensor ? arg : arg.tensor;
      const start = arg instanceof Tensor ? 0 : arg.offset;
      const size = arg instanceof Tensor ? tensor.buffer.size : arg.size;
      if (start + size > tensor.buffer.size) {
        throw new GpuError(
          `Kernel ${kernel.label}: binding "${b.name}" range ${start}+${size} overruns tensor "${tensor.label}"`,
          kernel.label,
        );
      }
      entries.push({ binding: i + 1, resource: { buffer: tensor.buffer, offset: start, size } });
      key += `|${bufferId(tensor.buffer)}:${start}:${size}`;
    });
    let groups = gpu.caches.get("bindGroups") as Map<string, GPUBindGroup> | undefined;
    if (!groups) gpu.caches.set("bindGroups", groups = new Map());
    let bindGroup = groups.get(key);
    if (!bindGroup) {
      if (groups.size > 20000) groups.clear(); // bound the cache when tensors come and go
      bindGroup = gpu.device.createBindGroup({ label: kernel.label, layout: kernel.layout, entries });
      groups.set(key, bindGroup);
    }
    const record: RecordedDispatch = {
      label: kernel.label,
      pipeline: kernel.pipeline,
      bindGroup,
      paramOffset: offset,
      workgroups: [x, y, z],
    };
    this.#dispatches.push(record);
    this.#encode(record);
  }

  #encode(d: RecordedDispatch): void {
    const timing = this.#timing;
    if (timing && timing.labels.length < timing.capacity) {
      this.#endPass();
      const i = timing.labels.length;
      timing.labels.push(d.label);
      const pass = this.#encoder.beginComputePass({
        label: d.label,
        timestampWrites: {
          querySet: timing.querySet,
          beginningOfPassWriteIndex: 2 * i,
          endOfPassWriteIndex: 2 * i + 1,
        },
      });
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, d.bindGroup, [d.paramOffset]);
      pass.dispatchWorkgroups(...d.workgroups);
      pass.end();
      return;
    }
    if (!this.#pass) this.#pass = this.#encoder.beginComputePass({ label: this.label });
    this.#pass.setPipeline(d.pipeline);
    this.#pass.setBindGroup(0, d.bindGroup, [d.paramOffset]);
    this.#pass.dispatchWorkgroups(...d.workgroups);
  }

  #endPass(): void {
    if (this.#pass) {
      this.#pass.end();
      this.#pass = null;
    }
  }

  /**
   * Copies `size` bytes between tensors (outside any compute pass, in recording order).
   *
   * @param src source tensor
   * @param srcOffset byte offset in the source
   * @param dst destination tensor
   * @param dstOffset byte offset in the destination
   * @param size bytes to copy (a multiple of 4)
   */
  copy(src: Tensor, srcOffset: number, dst: Tensor, dstOffset: number, size: number): void {
    this.#endPass();
    this.#encoder.copyBufferToBuffer(src.buffer, srcOffset, dst.buffer, dstOffset, size);
  }

  /**
   * Uploads the parameters and submits the recorded work. Errors the GPU reports are raised at the
   * next readback ({@linkcode readTensors}), naming the kernel.
   *
   * @returns the timing result when the step was opened with `timing`, to be awaited after a readback
   */
  submit(): Promise<KernelTiming[]> | null {
    if (this.#submitted) throw new Error(`Step "${this.label}" was already submitted`);
    this.#submitted = true;
    this.#endPass();
    const gpu = this.gpu;
    const device = gpu.device;
    const arena = arenaOf(gpu);
    if (this.#arenaUsed > 0) device.queue.writeBuffer(arena.buffer, 0, arena.cpu, 0, this.#arenaUsed);
    let timingBuffer: GPUBuffer | null = null;
    const timing = this.#timing;
    if (timing && timing.labels.length > 0) {
      const bytes = timing.labels.length * 16;
      const resolve = device.createBuffer({
        label: "timestamps",
        size: bytes,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      });
      timingBuffer = device.createBuffer({
        label: "timestamps readback",
        size: bytes,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      this.#encoder.resolveQuerySet(timing.querySet, 0, timing.labels.length * 2, resolve, 0);
      this.#encoder.copyBufferToBuffer(resolve, 0, timingBuffer, 0, bytes);
    }
    device.queue.submit([this.#encoder.finish()]);
    gpu.counters.dispatches += this.#dispatches.length;
    gpu.counters.submits++;
    const validation = device.popErrorScope();
    const oom = device.popErrorScope();
    openSteps--;
    const dispatches = this.#dispatches;
    const label = this.label;
    gpu.trackErrors(
      Promise.all([validation, oom]).then(async ([v, o]) => {
        const err = v ?? o;
        if (!err) return null;
        const culprit = await findFailingDispatch(gpu, dispatches);
        const where = culprit ? `kernel ${culprit.label}` : `one of ${summarise(dispatches)}`;
        return new GpuError(
          `GPU ${v ? "validation" : "out-of-memory"} error in ${where} (step "${label}"): ${err.message}`,
          culprit?.label,
        );
      }),
    );
    if (!timingBuffer) return null;
    const buffer = timingBuffer;
    const labels = timing!.labels;
    return buffer.mapAsync(GPUMapMode.READ).then(() => {
      const t = new BigUint64Array(buffer.getMappedRange().slice(0));
      buffer.unmap();
      buffer.destroy();
      return labels.map((l, i) => ({ label: l, ns: Number(t[2 * i + 1] - t[2 * i]) }));
    });
  }
}

function summarise(dispatches: readonly RecordedDispatch[]): string {
  const counts = new Map<string, number>();
  for (const d of dispatches) counts.set(d.label, (counts.get(d.label) ?? 0) + 1);
  return [...counts].map(([l, n]) => (n > 1 ? `${l}×${n}` : l)).join(", ");
}

/**
 * Replays a failed step's dispatches one command buffer each, inside their own error scopes, to
 * find which one the GPU rejects. An invalid command buffer never runs, so the failed step did
 * nothing; the replay runs the valid dispatches once, and the caller raises an error either way.
 */
async function findFailingDispatch(
  gpu: Gpu,
  dispatches: readonly RecordedDispatch[],
): Promise<RecordedDispatch | null> {
  const device = gpu.device;
  for (const d of dispatches) {
    device.pushErrorScope("validation");
    const encoder = device.createCommandEncoder({ label: `replay ${d.label}` });
    const pass = encoder.beginComputePass({ label: d.label });
    pass.setPipeline(d.pipeline);
    pass.setBindGroup(0, d.bindGroup, [d.paramOffset]);
    pass.dispatchWorkgroups(...d.workgroups);
    pass.end();
    device.queue.submit([encoder.finish()]);
    const err = await device.popErrorScope();
    if (err) return d;
  }
  return null;
}

/** Number of steps opened and not yet submitted (for tests of the recorder's discipline). */
export function openStepCount(): number {
  return openSteps;
}
