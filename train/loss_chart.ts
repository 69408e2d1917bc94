/**
 * A line chart as SVG text (the loss curve written beside each checkpoint).
 *
 * @module
 */

/** One line of the chart. */
export interface Series {
  /** Legend label. */
  label: string;
  /** One value per x. */
  values: number[];
}

/**
 * Renders series over shared x values on one y range, so the lines compare; non-finite values
 * are skipped.
 *
 * @example
 * ```ts
 * import { lineChart } from "./loss_chart.ts";
 * const svg = lineChart("loss", [1, 2, 3], [{ label: "ar", values: [3, 2, 1.5] }]);
 * console.log(svg.includes("polyline")); // true
 * ```
 */
export function lineChart(title: string, xs: readonly number[], series: readonly Series[]): string {
  const W = 640, H = 360, left = 60, right = 20, top = 40, bottom = 40;
  const finite = series.flatMap((s) => s.values.filter(Number.isFinite));
  const yMin = Math.min(0, ...finite), yMax = Math.max(1e-9, ...finite);
  const xMin = Math.min(...xs, 0), xMax = Math.max(...xs, 1);
  const px = (x: number) => left + ((x - xMin) / (xMax - xMin || 1)) * (W - left - right);
  const py = (y: number) => H - bottom - ((y - yMin) / (yMax - yMin || 1)) * (H - top - bottom);
  const colors = ["#4e79a7", "#e15759", "#59a14f", "#f28e2b"];
  const lines = series.map((s, i) => {
    const pts = xs.map((x, j) => [x, s.values[j]]).filter(([, y]) => Number.isFinite(y))
      .map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(" ");
    return `<polyline fill="none" stroke="${colors[i % colors.length]}" stroke-width="2" points="${pts}"/>` +
      `<text x="${W - right - 150}" y="${top + 16 * i}" fill="${
        colors[i % colors.length]
      }">${s.label}</text>`;
  });
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const y = yMin + f * (yMax - yMin);
    return `<text x="${left - 6}" y="${py(y) + 4}" text-anchor="end">${y.toPrecision(3)}</text>` +
      `<line x1="${left}" x2="${W - right}" y1="${py(y)}" y2="${py(y)}" stroke="#ddd"/>`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">` +
    `<rect width="100%" height="100%" fill="white"/>` +
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${title}</text>` +
    ticks.join("") + lines.join("") +
    `<text x="${W / 2}" y="${H - 8}" text-anchor="middle">step (last ${xs.at(-1) ?? 0})</text></svg>\n`;
}
