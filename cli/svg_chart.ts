/**
 * A small horizontal bar chart as SVG text, for benchmark figures people would rather see.
 *
 * @module
 */

/** One bar. */
export interface Bar {
  /** Label left of the bar. */
  label: string;
  /** Value (bar length). */
  value: number;
  /** Text right of the bar (default: the value). */
  note?: string;
}

function escape(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/**
 * Renders bars scaled to the largest value.
 *
 * @example A two-bar chart
 * ```ts
 * import { barChart } from "./svg_chart.ts";
 * const svg = barChart("tokens/s", [{ label: "ar", value: 100 }, { label: "jacobi", value: 250 }]);
 * console.log(svg.startsWith("<svg")); // true
 * ```
 */
export function barChart(title: string, bars: readonly Bar[]): string {
  const rowH = 28, labelW = 170, barW = 360, noteW = 170, top = 40;
  const width = labelW + barW + noteW;
  const height = top + bars.length * rowH + 16;
  const max = Math.max(1e-9, ...bars.map((b) => b.value));
  const colors = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948"];
  const rows = bars.map((b, i) => {
    const y = top + i * rowH;
    const w = Math.max(1, (b.value / max) * barW);
    return `<text x="${labelW - 8}" y="${y + 18}" text-anchor="end">${escape(b.label)}</text>` +
      `<rect x="${labelW}" y="${y + 4}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="${
        colors[i % colors.length]
      }"/>` +
      `<text x="${labelW + w + 6}" y="${y + 18}">${escape(b.note ?? b.value.toFixed(1))}</text>`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="13">` +
    `<rect width="100%" height="100%" fill="white"/>` +
    `<text x="${width / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">${
      escape(title)
    }</text>` +
    rows.join("") + `</svg>\n`;
}
