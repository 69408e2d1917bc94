/**
 * Progress for long work: a bar with rate and ETA on a terminal, plain lines otherwise.
 *
 * @module
 */

/** Reports progress of a job with a known total. */
export class Progress {
  readonly #label: string;
  readonly #total: number;
  readonly #unit: string;
  readonly #tty: boolean;
  readonly #start = performance.now();
  #lastDraw = 0;
  #lastPercentLine = -1;
  #first: { done: number; time: number } | null = null;

  /**
   * @param label what is progressing
   * @param total total amount
   * @param unit unit of the amount ("B" formats as bytes)
   */
  constructor(label: string, total: number, unit = "") {
    this.#label = label;
    this.#total = Math.max(1, total);
    this.#unit = unit;
    this.#tty = Deno.stderr.isTerminal();
  }

  #fmt(n: number): string {
    if (this.#unit === "B") {
      const units = ["B", "KiB", "MiB", "GiB"];
      let i = 0;
      while (n >= 1024 && i < units.length - 1) {
        n /= 1024;
        i++;
      }
      return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
    }
    return `${Math.round(n)}${this.#unit ? ` ${this.#unit}` : ""}`;
  }

  /** Reports `done` out of the total; redraws at most 10 times a second. */
  update(done: number, detail = ""): void {
    const now = performance.now();
    const fraction = Math.min(1, done / this.#total);
    // The rate counts from the first report, so work done before it (a resumed run, a first
    // chunk reported at once) does not inflate it.
    this.#first ??= { done, time: this.#start };
    const seconds = (now - this.#first.time) / 1000;
    const rate = seconds > 0.5 ? (done - this.#first.done) / seconds : 0;
    const eta = rate > 0 ? (this.#total - done) / rate : NaN;
    const text =
      `${this.#label} ${(fraction * 100).toFixed(0).padStart(3)}% ${this.#fmt(done)}/${
        this.#fmt(this.#total)
      } ` +
      `${rate > 0 ? this.#fmt(rate) : "?"}/s ETA ${Number.isFinite(eta) ? `${eta.toFixed(0)}s` : "?"}${
        detail ? ` ${detail}` : ""
      }`;
    const enc = new TextEncoder();
    if (this.#tty) {
      if (now - this.#lastDraw < 100 && fraction < 1) return;
      this.#lastDraw = now;
      const width = 24;
      const bar = "#".repeat(Math.round(fraction * width)).padEnd(width, ".");
      Deno.stderr.writeSync(enc.encode(`\r[${bar}] ${text}\x1b[K`));
    } else {
      const tenth = Math.floor(fraction * 10);
      if (tenth === this.#lastPercentLine) return;
      this.#lastPercentLine = tenth;
      Deno.stderr.writeSync(enc.encode(`${text}\n`));
    }
  }

  /** Ends the bar (a newline on a terminal). */
  done(): void {
    if (this.#tty) Deno.stderr.writeSync(new TextEncoder().encode("\n"));
  }
}

/** A training log entry, as far as the progress line needs it. */
interface LoggedStep {
  step: number;
  arLoss: number;
  consistencyLoss: number;
  tokensPerSecond: number;
  gflops: number;
}

/**
 * A progress bar for `train`'s log callback: created at the first entry (which brings the total),
 * one line per entry with the losses and throughput (`line` overrides what it shows).
 *
 * @example
 * ```ts ignore
 * const progress = trainingProgress("train");
 * await train(p, items, { ...options, onLog: progress.onLog });
 * progress.done();
 * ```
 */
export function trainingProgress<E extends LoggedStep>(
  label: string,
  line: (e: E) => string = (e) =>
    `ar ${e.arLoss.toFixed(3)} cons ${e.consistencyLoss.toFixed(3)} ${e.tokensPerSecond.toFixed(0)} tok/s ${
      e.gflops.toFixed(2)
    } GFLOP/s`,
): { onLog: (e: E, total: number) => void; done: () => void } {
  let bar: Progress | null = null;
  return {
    onLog: (e, total) => {
      bar ??= new Progress(label, total, "steps");
      bar.update(e.step, line(e));
    },
    done: () => (bar as Progress | null)?.done(),
  };
}
