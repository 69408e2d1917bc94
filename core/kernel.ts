/**
 * Kernel specs and the pipeline registry.
 *
 * A kernel is declared once as a {@linkcode KernelSpec}: its storage bindings (read or read-write),
 * its scalar parameters, and a WGSL body that is a function of a variant (tile sizes, workgroup
 * sizes, dtypes). The registry generates the binding declarations, compiles each variant once per
 * device and caches it. Parameters reach the shader through a uniform `P` bound with a dynamic
 * offset into the step's parameter arena, so they change per dispatch without a sync.
 *
 * @module
 */

import type { Gpu } from "./device.ts";

/** One storage binding of a kernel. */
export interface BindingSpec {
  /** Name of the WGSL variable. */
  name: string;
  /** `read` for inputs, `read_write` for outputs (and in-place updates). */
  access: "read" | "read_write";
  /** WGSL element type of the `array<...>`, e.g. `f32`, `vec4<f32>`, `u32`, `f16` (default `f32`). */
  type?: string;
}

/** One scalar parameter of a kernel (a field of the uniform struct `P`). */
export interface ParamSpec {
  /** Field name. */
  name: string;
  /** WGSL scalar type. */
  type: "u32" | "i32" | "f32";
}

/** Compile-time choices of a kernel (tile sizes, workgroup size, dtypes). */
export type Variant = Record<string, number | string | boolean>;

/**
 * The contract of a kernel: bindings, parameters, and its WGSL body for a variant.
 *
 * The generated preamble declares `P` (the parameters) at binding 0 and each storage binding in
 * order from binding 1, then `const` lines for every numeric or boolean variant field, so the body
 * refers to them by name.
 */
export interface KernelSpec<V extends Variant = Variant> {
  /** Kernel name, used in labels and error messages. */
  name: string;
  /** Storage bindings, in binding order. A binding's type may depend on the variant. */
  bindings: readonly BindingSpec[] | ((variant: V) => readonly BindingSpec[]);
  /** Scalar parameters, in struct order. */
  params: readonly ParamSpec[];
  /** The WGSL body (entry point `main`) for a variant. */
  wgsl: (variant: V) => string;
}

/** A compiled variant of a kernel. */
export interface CompiledKernel {
  /** The spec it came from. */
  spec: KernelSpec<never>;
  /** The variant it was compiled for. */
  variant: Variant;
  /** `name[key=value,...]`, used in labels and errors. */
  label: string;
  /** Resolved storage bindings. */
  bindings: readonly BindingSpec[];
  /** Unique id for bind-group cache keys. */
  id: number;
  /** The pipeline. */
  pipeline: GPUComputePipeline;
  /** Its bind-group layout (binding 0 = params with a dynamic offset). */
  layout: GPUBindGroupLayout;
  /** Byte size of the params struct, rounded up to 16. */
  paramBytes: number;
}

let nextKernelId = 1;

/** Builds the full WGSL source of a kernel variant: preamble + body. Exposed for tests and docs. */
export function kernelSource<V extends Variant>(
  spec: KernelSpec<V>,
  variant: V,
  bindings: readonly BindingSpec[],
  directives: { subgroups?: boolean } = {},
): string {
  const lines: string[] = [];
  const body = spec.wgsl(variant);
  const usesF16 = bindings.some((b) => (b.type ?? "f32").includes("f16")) || variant.f16 === true;
  if (usesF16) lines.push("enable f16;");
  if (directives.subgroups && /\bsubgroup[A-Z_]/.test(body)) lines.push("enable subgroups;");
  const fields = spec.params.length > 0
    ? spec.params.map((p) => `  ${p.name}: ${p.type},`).join("\n")
    : "  _unused: u32,";
  lines.push(`struct Params {\n${fields}\n}`);
  lines.push("@group(0) @binding(0) var<uniform> P: Params;");
  bindings.forEach((b, i) => {
    lines.push(
      `@group(0) @binding(${i + 1}) var<storage, ${b.access}> ${b.name}: array<${b.type ?? "f32"}>;`,
    );
  });
  for (const [key, value] of Object.entries(variant)) {
    if (typeof value === "number") {
      lines.push(
        `const ${key}: ${Number.isInteger(value) ? "u32" : "f32"} = ${value}${
          Number.isInteger(value) ? "u" : ""
        };`,
      );
    } else if (typeof value === "boolean") {
      lines.push(`const ${key}: bool = ${value};`);
    }
  }
  lines.push(body);
  return lines.join("\n");
}

function variantLabel(name: string, variant: Variant): string {
  const parts = Object.entries(variant).map(([k, v]) => `${k}=${v}`);
  return parts.length ? `${name}[${parts.join(",")}]` : name;
}

/**
 * Returns the compiled pipeline for a kernel variant, compiling it on first use (cached per device).
 *
 * @example Compiling a kernel
 * ```ts ignore
 * const compiled = compileKernel(gpu, addSpec, { WG: 64 });
 * console.log(compiled.label); // add[WG=64]
 * ```
 */
export function compileKernel<V extends Variant>(
  gpu: Gpu,
  spec: KernelSpec<V>,
  variant: V = {} as V,
): CompiledKernel {
  let cache = gpu.caches.get("kernels") as Map<string, CompiledKernel> | undefined;
  if (!cache) gpu.caches.set("kernels", cache = new Map());
  const label = variantLabel(spec.name, variant);
  const hit = cache.get(label);
  if (hit && hit.spec === (spec as KernelSpec<never>)) return hit;
  const bindings = typeof spec.bindings === "function" ? spec.bindings(variant) : spec.bindings;
  const code = kernelSource(spec, variant, bindings, { subgroups: gpu.features.subgroupsDirective });
  const device = gpu.device;
  const paramBytes = Math.max(16, Math.ceil((spec.params.length * 4) / 16) * 16);
  const layout = device.createBindGroupLayout({
    label,
    entries: [
      {
        binding: 0,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: "uniform", hasDynamicOffset: true, minBindingSize: paramBytes },
      },
      ...bindings.map((b, i) => ({
        binding: i + 1,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: b.access === "read" ? "read-only-storage" as const : "storage" as const },
      })),
    ],
  });
  const module = device.createShaderModule({ label, code });
  const pipeline = device.createComputePipeline({
    label,
    layout: device.createPipelineLayout({ label, bindGroupLayouts: [layout] }),
    compute: { module, entryPoint: "main" },
  });
  const compiled: CompiledKernel = {
    spec,
    variant,
    label,
    bindings,
    id: nextKernelId++,
    pipeline,
    layout,
    paramBytes,
  };
  cache.set(label, compiled);
  return compiled;
}
