/**
 * WebGPU device acquisition: the adapter's full limits, its optional features, and error capture.
 *
 * Nothing here knows about models. A {@linkcode Gpu} owns one `GPUDevice`, the pipeline cache, the
 * parameter arena and the readback staging pool used by {@linkcode Step}.
 *
 * @module
 */

/** Features this project can use when the adapter has them. */
export interface GpuFeatures {
  /** `shader-f16`: f16 storage and arithmetic in WGSL. */
  f16: boolean;
  /** `timestamp-query`: nanosecond kernel timing. */
  timestamps: boolean;
  /** `subgroups`: subgroup reductions (needs a per-runtime WGSL preamble). */
  subgroups: boolean;
  /**
   * WGSL that uses subgroups must say `enable subgroups;` (Chrome's Tint requires it; Deno's naga
   * rejects it): found once per device by compiling a one-line shader.
   */
  subgroupsDirective?: boolean;
}

/** What the adapter says about itself, for benchmark reports. */
export interface GpuAdapterSummary {
  /** Human-readable name, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`. */
  description: string;
  /** Vendor id or name as the runtime reports it. */
  vendor: string;
  /** Architecture string (often empty). */
  architecture: string;
  /** True for software adapters such as llvmpipe or SwiftShader. */
  isFallbackAdapter: boolean;
}

/** Options for {@linkcode requestGpu}. */
export interface GpuOptions {
  /** Passed to `requestAdapter`. */
  powerPreference?: GPUPowerPreference;
  /** Ask for `shader-f16` when present (default true). */
  f16?: boolean;
  /** Ask for `timestamp-query` when present (default true). */
  timestamps?: boolean;
}

/** The WebGPU limits this project raises to the adapter's maximum. */
const LIMIT_NAMES = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxUniformBufferBindingSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBuffersPerShaderStage",
  "maxBindGroups",
  "maxBindingsPerBindGroup",
  "maxDynamicUniformBuffersPerPipelineLayout",
  "maxDynamicStorageBuffersPerPipelineLayout",
] as const;

/** Thrown when the GPU reports an error; names the step and, when found, the kernel. */
export class GpuError extends Error {
  /** Label of the kernel that failed, when it could be identified. */
  readonly kernel?: string;
  /**
   * Creates the error.
   *
   * @param message the full message
   * @param kernel the kernel label, when known
   */
  constructor(message: string, kernel?: string) {
    super(message);
    this.name = "GpuError";
    this.kernel = kernel;
  }
}

/**
 * One WebGPU device with the project's bookkeeping around it.
 *
 * @example Getting a device
 * ```ts ignore
 * import { requestGpu } from "./device.ts";
 * const gpu = await requestGpu();
 * console.log(gpu.adapter.description, gpu.features);
 * gpu.destroy();
 * ```
 */
export class Gpu {
  /** The device. */
  readonly device: GPUDevice;
  /** What the adapter reports about itself. */
  readonly adapter: GpuAdapterSummary;
  /** Optional features enabled on this device. */
  readonly features: GpuFeatures;
  /** Errors that reached no error scope (`uncapturederror`), raised at the next readback. */
  readonly #uncaptured: string[] = [];
  /** Error-scope results of submitted steps, checked at the next readback. */
  readonly #pending: Promise<GpuError | null>[] = [];
  /** Caches owned by other core modules, keyed by their module (pipelines, bind groups, staging). */
  readonly caches: Map<string, unknown> = new Map();
  /** Dispatches and submits of every step submitted on this device so far (for per-token figures). */
  readonly counters: { dispatches: number; submits: number } = { dispatches: 0, submits: 0 };
  /**
   * Milliseconds a read of a few bytes takes with the GPU idle, measured by {@linkcode requestGpu}:
   * ~10 in Deno (its `mapAsync` resolves after a fixed wait), well under 1 in browsers. The decoding
   * loops size the work they queue behind each read by it (decode/cadence.ts).
   */
  readonly readbackMs: number;
  #lost = false;

  /**
   * Wraps an existing device; use {@linkcode requestGpu} to create one.
   *
   * @param device the device
   * @param adapter the adapter summary
   * @param features the enabled optional features
   * @param readbackMs how long reading a few bytes back takes with the GPU idle (see
   *   {@linkcode Gpu.readbackMs}; default 10, Deno's)
   */
  constructor(device: GPUDevice, adapter: GpuAdapterSummary, features: GpuFeatures, readbackMs = 10) {
    this.device = device;
    this.adapter = adapter;
    this.features = features;
    this.readbackMs = readbackMs;
    device.addEventListener("uncapturederror", (event) => {
      this.#uncaptured.push((event as GPUUncapturedErrorEvent).error.message);
    });
    device.lost.then((info) => {
      this.#lost = true;
      if (info.reason !== "destroyed") this.#uncaptured.push(`device lost: ${info.message}`);
    });
  }

  /** The device's limits (the adapter's maximum, as requested). */
  get limits(): GPUSupportedLimits {
    return this.device.limits;
  }

  /** Registers the error-scope result of a submitted step, to be raised at the next readback. */
  trackErrors(result: Promise<GpuError | null>): void {
    this.#pending.push(result);
  }

  /**
   * Raises the first error reported since the last check: from any submitted step's error scope,
   * or an uncaptured one. Called by every readback before it returns data.
   */
  async throwIfFailed(): Promise<void> {
    const pending = this.#pending.splice(0);
    const results = await Promise.all(pending);
    const failed = results.find((r) => r !== null);
    if (failed) throw failed;
    if (this.#uncaptured.length > 0) {
      const messages = this.#uncaptured.splice(0);
      throw new GpuError(`GPU error outside any step: ${messages.join("; ")}`);
    }
    if (this.#lost) throw new GpuError("The GPU device was lost; create a new one with requestGpu()");
  }

  /** Destroys the device and everything created on it. */
  destroy(): void {
    this.caches.clear();
    this.device.destroy();
  }
}

/**
 * Deno's WebGPU (wgpu) on Linux probes OpenGL as well as Vulkan when it enumerates adapters. The GL
 * probe prints "error: XDG_RUNTIME_DIR is invalid or not set" twice when that variable is unset
 * (containers, ssh, CI), noise that reads like a failure; and processes that loaded Mesa's GL and
 * Vulkan drivers side by side aborted at exit now and then here ("free(): invalid pointer" after all
 * work was done: 1-2 runs in 40 of a small GPU test file, none in 40 with Vulkan alone). So, before
 * the first request, when Deno runs on Linux with a Vulkan driver installed and the backend is not
 * chosen (`DENO_WEBGPU_BACKEND`), it is set to Vulkan; and a private runtime directory is named
 * when `XDG_RUNTIME_DIR` is unset. Nothing happens in a browser (no `Deno` global).
 */
function denoWebgpuDefaults(): void {
  const deno = (globalThis as {
    Deno?: {
      build: { os: string };
      env: { get(k: string): string | undefined; set(k: string, v: string): void };
      mkdirSync(p: string, o: { recursive: boolean; mode: number }): void;
      readDirSync(p: string): Iterable<{ name: string }>;
      uid?(): number | null;
    };
  }).Deno;
  if (!deno || deno.build.os !== "linux") return;
  try {
    const icds = (dir: string) => {
      try {
        return [...deno.readDirSync(dir)].some((e) => e.name.endsWith(".json"));
      } catch {
        return false;
      }
    };
    const vulkan = deno.env.get("VK_ICD_FILENAMES") || deno.env.get("VK_DRIVER_FILES") ||
      icds("/usr/share/vulkan/icd.d") || icds("/etc/vulkan/icd.d");
    if (vulkan && !deno.env.get("DENO_WEBGPU_BACKEND")) deno.env.set("DENO_WEBGPU_BACKEND", "vulkan");
    if (!deno.env.get("XDG_RUNTIME_DIR")) {
      const dir = `/tmp/cllm-runtime-${deno.uid?.() ?? "user"}`;
      deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
      deno.env.set("XDG_RUNTIME_DIR", dir);
    }
  } catch {
    // No env or file permission: the defaults stay as they are, nothing else changes.
  }
}

/**
 * Requests an adapter and a device with the adapter's full limits and the useful optional features.
 *
 * Throws an error that says what to install when there is no WebGPU adapter.
 *
 * @example Reporting the adapter
 * ```ts ignore
 * import { requestGpu } from "./device.ts";
 * const gpu = await requestGpu();
 * console.log(`${gpu.adapter.description}, f16: ${gpu.features.f16}`);
 * ```
 */
export async function requestGpu(options: GpuOptions = {}): Promise<Gpu> {
  const nav = globalThis.navigator as Navigator & { gpu?: GPU };
  if (!nav?.gpu) {
    throw new Error(
      "WebGPU is not available in this runtime (navigator.gpu is undefined); use Deno 2.9 or newer, " +
        "or a browser with WebGPU enabled",
    );
  }
  denoWebgpuDefaults();
  const adapter = await nav.gpu.requestAdapter({ powerPreference: options.powerPreference });
  if (!adapter) {
    throw new Error(
      "No WebGPU adapter found. On Linux without a GPU, install Mesa's software Vulkan driver " +
        "(`apt-get install mesa-vulkan-drivers`) and set DENO_WEBGPU_BACKEND=vulkan; with a GPU, " +
        "install its Vulkan driver. In a browser, enable WebGPU (chrome://flags/#enable-unsafe-webgpu).",
    );
  }
  const requiredLimits: Record<string, number> = {};
  for (const name of LIMIT_NAMES) {
    const value = (adapter.limits as unknown as Record<string, number | undefined>)[name];
    if (typeof value === "number") requiredLimits[name] = value;
  }
  const wanted: GPUFeatureName[] = [];
  const f16 = options.f16 !== false && adapter.features.has("shader-f16");
  const timestamps = options.timestamps !== false && adapter.features.has("timestamp-query");
  if (f16) wanted.push("shader-f16");
  if (timestamps) wanted.push("timestamp-query");
  // lavapipe accepts "subgroups" without listing it (docs/webgpu.md §4), so try it and fall back.
  let device: GPUDevice;
  let subgroups = true;
  try {
    device = await adapter.requestDevice({
      requiredFeatures: [...wanted, "subgroups" as GPUFeatureName],
      requiredLimits,
    });
  } catch {
    subgroups = false;
    device = await adapter.requestDevice({ requiredFeatures: wanted, requiredLimits });
  }
  const subgroupsDirective = subgroups &&
    await compiles(device, "enable subgroups;\n@compute @workgroup_size(1) fn main() {}");
  const info = adapter.info;
  return new Gpu(
    device,
    {
      // Browsers may leave the description empty; vendor and architecture still name the adapter.
      description: info.description || info.device ||
        [info.vendor, info.architecture].filter(Boolean).join(" ") || "unknown adapter",
      vendor: info.vendor,
      architecture: info.architecture,
      isFallbackAdapter: Boolean((info as { isFallbackAdapter?: boolean }).isFallbackAdapter),
    },
    { f16, timestamps, subgroups, subgroupsDirective },
    await measureReadback(device),
  );
}

/** The fastest of three reads of 4 bytes on an idle device, in milliseconds. */
async function measureReadback(device: GPUDevice): Promise<number> {
  const buffer = device.createBuffer({ size: 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  let best = Infinity;
  for (let i = 0; i < 3; i++) {
    const t = performance.now();
    await buffer.mapAsync(GPUMapMode.READ);
    best = Math.min(best, performance.now() - t);
    buffer.unmap();
  }
  buffer.destroy();
  return best;
}

/** Whether `code` compiles on `device` (a validation error scope around the module's creation). */
async function compiles(device: GPUDevice, code: string): Promise<boolean> {
  device.pushErrorScope("validation");
  device.createShaderModule({ code });
  return (await device.popErrorScope()) === null;
}
