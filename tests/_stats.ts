/**
 * Goodness of fit for the sampling tests: the G-test (likelihood-ratio chi-square) of observed
 * counts against exact probabilities, with cells of small expected count pooled.
 *
 * @module
 */

/** ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; ~15 digits). */
function logGamma(x: number): number {
  const c = [
    0.99999999999980993,
    676.5203681218851,
    -1259.1392167224028,
    771.32342877765313,
    -176.61503916999185,
    12.507343278686905,
    -0.13857109526572012,
    9.9843695780195716e-6,
    1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  x -= 1;
  let a = c[0];
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Upper regularised incomplete gamma Q(a, x): series below a + 1, continued fraction above. */
function gammaQ(a: number, x: number): number {
  if (x <= 0) return 1;
  const lead = Math.exp(-x + a * Math.log(x) - logGamma(a));
  if (x < a + 1) {
    let sum = 1 / a;
    let term = sum;
    for (let n = 1; n < 10000 && Math.abs(term) > Math.abs(sum) * 1e-15; n++) {
      term *= x / (a + n);
      sum += term;
    }
    return 1 - sum * lead;
  }
  // Lentz's method for the continued fraction of Q.
  const tiny = 1e-300;
  let b = x + 1 - a;
  let c = 1 / tiny;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 10000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < tiny) d = tiny;
    c = b + an / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < 1e-15) break;
  }
  return lead * h;
}

/** P(χ²_df ≥ x). */
export function chiSquareSurvival(x: number, df: number): number {
  return gammaQ(df / 2, x / 2);
}

/** The outcome of {@linkcode gTest}. */
export interface FitResult {
  /** G statistic. */
  g: number;
  /** Degrees of freedom (cells after pooling, minus one). */
  df: number;
  /** P(χ²_df ≥ G) under the exact distribution. */
  pValue: number;
  /** Samples counted. */
  n: number;
  /** Observed outcomes that the exact distribution gives probability 0 (any makes pValue 0). */
  impossible: number;
}

/**
 * G-test of `observed` (outcome → count) against `expected` (outcome → probability, summing to 1).
 * Cells whose expected count is below 5 are pooled into one; an observed outcome of probability 0
 * is counted in `impossible` and fails the test outright.
 */
export function gTest(observed: Map<string, number>, expected: Map<string, number>): FitResult {
  let n = 0;
  for (const c of observed.values()) n += c;
  let impossible = 0;
  for (const [k, c] of observed) if (!((expected.get(k) ?? 0) > 0)) impossible += c;
  const cells: Array<{ o: number; e: number }> = [];
  const pooled = { o: 0, e: 0 };
  for (const [k, p] of expected) {
    const e = p * n;
    const o = observed.get(k) ?? 0;
    if (e < 5) {
      pooled.o += o;
      pooled.e += e;
    } else cells.push({ o, e });
  }
  if (pooled.e > 0) cells.push(pooled);
  let g = 0;
  for (const { o, e } of cells) if (o > 0) g += 2 * o * Math.log(o / e);
  const df = Math.max(1, cells.length - 1);
  return { g, df, pValue: impossible > 0 ? 0 : chiSquareSurvival(g, df), n, impossible };
}
