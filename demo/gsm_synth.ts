/**
 * GSM8K-style synthetic arithmetic word problems for training and testing a tiny model end to end.
 *
 * Each problem is drawn from one of {@linkcode TEMPLATE_NAMES} (41 templates: buying, change,
 * sharing, ages, speed × time, rates, groups, percentages with whole results, averages, ...), with
 * random names, objects and small integers. Its answer has 2-4 reasoning lines in GSM8K's exact
 * calculator format, then the final line `#### <answer>`:
 *
 * ```text
 * The pens cost 3 * 4 = <<3*4=12>>12 dollars.
 * She has 20 - 12 = <<20-12=8>>8 dollars left.
 * #### 8
 * ```
 *
 * Rules every problem follows (the tests check them): every number is a non-negative integer at most
 * {@linkcode MAX_VALUE}; division appears only where it is exact; every `<<expr=value>>` is
 * arithmetically true and is followed by its value; the `####` number equals the last computed value.
 * The language is deliberately regular (short sentences, one phrasing per template) so that a model
 * of a few million parameters can learn it.
 *
 * Splits: a problem belongs to `"heldout"` when the FNV-1a hash of its question text is divisible by
 * 8 ({@linkcode splitOf}), else to `"train"`; so no question text is in both splits, for any seeds.
 * Within one call, questions are unique.
 *
 * Training documents ({@linkcode corpus}, {@linkcode encodeDocuments}) are
 * `<s>` + `formatPrompt("gsm8k", {question})` + answer + `</s>`: the model learns to emit EOS right
 * after the `#### n` line.
 *
 * @module
 */

import { formatPrompt, seededRandom } from "../mod.ts";

// ===================================================================================================
// Public types and constants
// ===================================================================================================

/**
 * One problem, with the field names of GSM8K's `test.jsonl`.
 *
 * @example A problem
 * ```ts
 * import type { Problem } from "./gsm_synth.ts";
 * const p: Problem = {
 *   question: "Ann has 3 bags of apples. Each bag has 4 apples. How many apples does Ann have?",
 *   answer: "Ann has 3 * 4 = <<3*4=12>>12 apples.\n#### 12",
 * };
 * ```
 */
export interface Problem {
  /** The word problem. */
  question: string;
  /** Reasoning lines with `<<expr=value>>` annotations, then `#### <answer>`. */
  answer: string;
  /** Name of the template it came from (one of {@linkcode TEMPLATE_NAMES}); absent for GSM8K data. */
  template?: string;
}

/** Which split a problem belongs to. */
export type Split = "train" | "heldout";

/**
 * Options of {@linkcode generateProblems}.
 *
 * @example Held-out problems
 * ```ts
 * import type { GenerateProblemsOptions } from "./gsm_synth.ts";
 * const o: GenerateProblemsOptions = { seed: 7, count: 100, split: "heldout" };
 * ```
 */
export interface GenerateProblemsOptions {
  /** PRNG seed (any 32-bit integer); the same seed gives the same problems. */
  seed: number;
  /** Number of problems. */
  count: number;
  /** Split to draw from (default `"train"`). */
  split?: Split;
  /** Restrict to these templates (default all of {@linkcode TEMPLATE_NAMES}). */
  templates?: readonly string[];
  /**
   * Largest number in any question or answer (default {@linkcode MAX_VALUE}); smaller values make
   * the arithmetic learnable by a smaller model (draws are clamped to it, results above it rejected).
   */
  maxValue?: number;
}

/** Largest number that appears in any question or answer, unless `maxValue` says otherwise. */
export const MAX_VALUE = 999;

// ===================================================================================================
// Random numbers and the problem builder
// ===================================================================================================

/** Thrown inside a template when a draw breaks a rule (too large, not exact); the draw is retried. */
class _Reject extends Error {}

/** A person: name and pronouns (lower case; capitalise with `_cap`). */
interface _Person {
  name: string;
  he: string;
  his: string;
  him: string;
}

/** A countable noun. */
interface _Noun {
  one: string;
  many: string;
}

/** The result of one calculator step. */
interface _Calc {
  /** `3 * 4 = <<3*4=12>>12` */
  text: string;
  /** 12 */
  v: number;
}

// deno-fmt-ignore
const _FEMALE = [
  "Ann", "Beth", "Cara", "Dana", "Emma", "Fay", "Gina", "Hana",
  "Ivy", "Jane", "Kate", "Lily", "Mia", "Nora", "Rose", "Sara",
];
// deno-fmt-ignore
const _MALE = [
  "Adam", "Ben", "Carl", "Dan", "Eli", "Finn", "Greg", "Hugo",
  "Ivan", "Jack", "Kyle", "Leo", "Max", "Noah", "Owen", "Sam",
];

function _nouns(...pairs: string[]): _Noun[] {
  const out: _Noun[] = [];
  for (let i = 0; i < pairs.length; i += 2) out.push({ one: pairs[i], many: pairs[i + 1] });
  return out;
}

/** Small things people have, give and share. */
// deno-fmt-ignore
const _THINGS = _nouns(
  "apple", "apples", "orange", "oranges", "pencil", "pencils", "marble", "marbles",
  "sticker", "stickers", "cookie", "cookies", "book", "books", "card", "cards",
  "toy", "toys", "shell", "shells", "candy", "candies", "balloon", "balloons",
  "egg", "eggs", "crayon", "crayons", "button", "buttons", "flower", "flowers",
);

/** Things with a price. */
// deno-fmt-ignore
const _GOODS = _nouns(
  "pen", "pens", "notebook", "notebooks", "shirt", "shirts", "hat", "hats",
  "cup", "cups", "ball", "balls", "kite", "kites", "lamp", "lamps",
  "bag", "bags", "game", "games", "plant", "plants", "mug", "mugs",
);

/** Things that are baked and boxed. */
const _BAKED = _nouns("cookie", "cookies", "muffin", "muffins", "cupcake", "cupcakes", "roll", "rolls");

/** Containers. */
// deno-fmt-ignore
const _CONTAINERS = _nouns("bag", "bags", "box", "boxes", "jar", "jars", "pack", "packs", "basket", "baskets");

function _cap(s: string): string {
  return s[0].toUpperCase() + s.slice(1);
}

/** Draws numbers, people and nouns for one problem, and records calculator steps. */
class _Builder {
  readonly #rand: () => number;
  /** Largest number allowed anywhere in the problem. */
  readonly max: number;
  /** Value of the last `calc`. */
  last = NaN;

  constructor(rand: () => number, max: number) {
    this.#rand = rand;
    this.max = max;
  }

  /** Uniform integer in [lo, min(hi, max)]. */
  int(lo: number, hi: number): number {
    hi = Math.min(hi, this.max);
    if (hi < lo) throw new _Reject();
    return lo + Math.floor(this.#rand() * (hi - lo + 1));
  }

  /** One element. */
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.#rand() * xs.length)];
  }

  /** `k` distinct elements. */
  distinct<T>(xs: readonly T[], k: number): T[] {
    const out: T[] = [];
    while (out.length < k) {
      const x = this.pick(xs);
      if (!out.includes(x)) out.push(x);
    }
    return out;
  }

  /** `k` people with distinct names. */
  people(k: number): _Person[] {
    const names = this.distinct([..._FEMALE, ..._MALE], k);
    return names.map((name) =>
      _FEMALE.includes(name)
        ? { name, he: "she", his: "her", him: "her" }
        : { name, he: "he", his: "his", him: "him" }
    );
  }

  /** One person. */
  person(): _Person {
    return this.people(1)[0];
  }

  /**
   * A calculator step over numbers and operators, e.g. `calc(3, "*", 4)` →
   * `"3 * 4 = <<3*4=12>>12"`. `*` and `/` bind tighter than `+` and `-`; each division must be
   * exact and every partial result an integer in [0, max], or the draw is rejected.
   */
  calc(...parts: (number | string)[]): _Calc {
    const v = _evaluate(parts, this.max);
    if (v === null) throw new _Reject();
    this.last = v;
    const spaced = parts.join(" ");
    const compact = parts.join("");
    return { text: `${spaced} = <<${compact}=${v}>>${v}`, v };
  }
}

/**
 * Evaluates numbers and operators with the usual precedence; null when a division is inexact or a
 * partial result leaves [0, max].
 */
function _evaluate(parts: readonly (number | string)[], max: number): number | null {
  const ok = (x: number) => Number.isInteger(x) && x >= 0 && x <= max;
  // Pass 1: products and quotients, left to right.
  const terms: number[] = [];
  const addOps: string[] = [];
  let acc = parts[0] as number;
  if (!ok(acc)) return null;
  for (let i = 1; i < parts.length; i += 2) {
    const op = parts[i] as string;
    const x = parts[i + 1] as number;
    if (!ok(x)) return null;
    if (op === "*") acc *= x;
    else if (op === "/") {
      if (x === 0 || acc % x !== 0) return null;
      acc /= x;
    } else {
      terms.push(acc);
      addOps.push(op);
      acc = x;
      continue;
    }
    // Percentages go through p * q before / 100, so products may exceed max briefly.
    if (!Number.isInteger(acc) || acc < 0 || acc > 100 * max) return null;
  }
  terms.push(acc);
  // Pass 2: sums and differences, left to right.
  let v = terms[0];
  for (let i = 0; i < addOps.length; i++) {
    v = addOps[i] === "+" ? v + terms[i + 1] : v - terms[i + 1];
    if (!ok(v)) return null;
  }
  return ok(v) ? v : null;
}

// ===================================================================================================
// Templates
// ===================================================================================================

/** A template: draws one problem; throws `_Reject` when a draw breaks a rule. */
type _Template = (g: _Builder) => { q: string; steps: string[] };

/** Percentages with their smallest base multiple: base * q / 100 is whole iff base % step == 0. */
const _PERCENTS: readonly [number, number][] = [
  [10, 10],
  [20, 5],
  [25, 4],
  [30, 10],
  [40, 5],
  [50, 2],
  [60, 5],
  [75, 4],
];

const _TEMPLATES: Readonly<Record<string, _Template>> = {
  shop_two: (g) => {
    const p = g.person();
    const [x, y] = g.distinct(_GOODS, 2);
    const a = g.int(2, 9), pa = g.int(2, 40), b = g.int(2, 9), pb = g.int(2, 40);
    const c1 = g.calc(a, "*", pa), c2 = g.calc(b, "*", pb), t = g.calc(c1.v, "+", c2.v);
    return {
      q: `${p.name} buys ${a} ${x.many} for ${pa} dollars each and ${b} ${y.many} for ${pb} dollars each. ` +
        `How many dollars does ${p.he} spend?`,
      steps: [
        `The ${x.many} cost ${c1.text} dollars.`,
        `The ${y.many} cost ${c2.text} dollars.`,
        `${_cap(p.he)} spends ${t.text} dollars.`,
      ],
    };
  },
  change: (g) => {
    const p = g.person();
    const x = g.pick(_GOODS);
    const a = g.int(2, 9), pr = g.int(2, 50);
    const c = g.calc(a, "*", pr);
    const m = g.int(c.v + 1, Math.min(g.max, c.v + 300));
    const r = g.calc(m, "-", c.v);
    return {
      q: `${p.name} has ${m} dollars. ${_cap(p.he)} buys ${a} ${x.many} for ${pr} dollars each. ` +
        `How many dollars does ${p.he} have left?`,
      steps: [`The ${x.many} cost ${c.text} dollars.`, `${_cap(p.he)} has ${r.text} dollars left.`],
    };
  },
  bags_give: (g) => {
    const [p, o] = g.people(2);
    const x = g.pick(_THINGS), box = g.pick(_CONTAINERS);
    const a = g.int(2, 12), b = g.int(2, 30);
    const t = g.calc(a, "*", b);
    const c = g.int(2, t.v - 2);
    const r = g.calc(t.v, "-", c);
    return {
      q: `${p.name} has ${a} ${box.many} of ${x.many}. Each ${box.one} has ${b} ${x.many}. ` +
        `${_cap(p.he)} gives ${c} ${x.many} to ${o.name}. How many ${x.many} does ${p.name} have left?`,
      steps: [`${p.name} has ${t.text} ${x.many}.`, `${_cap(p.he)} has ${r.text} ${x.many} left.`],
    };
  },
  share_equal: (g) => {
    const p = g.person();
    const x = g.pick(_THINGS);
    const k = g.int(2, 9), each = g.int(2, 40);
    const total = k * each;
    const a = g.int(2, total - 2);
    const t = g.calc(a, "+", total - a), r = g.calc(t.v, "/", k);
    return {
      q: `${p.name} has ${a} ${x.many}. ${_cap(p.he)} buys ${total - a} more ${x.many}. ` +
        `${_cap(p.he)} shares them equally among ${k} friends. How many ${x.many} does each friend get?`,
      steps: [`${p.name} has ${t.text} ${x.many}.`, `Each friend gets ${r.text} ${x.many}.`],
    };
  },
  ages_sum: (g) => {
    const [p, o] = g.people(2);
    const a = g.int(3, 60), b = g.int(2, 30);
    const m = g.calc(a, "+", b), s = g.calc(a, "+", m.v);
    return {
      q: `${p.name} is ${a} years old. ${o.name} is ${b} years older than ${p.name}. ` +
        `What is the sum of their ages?`,
      steps: [`${o.name} is ${m.text} years old.`, `The sum of their ages is ${s.text} years.`],
    };
  },
  ages_future: (g) => {
    const p = g.person();
    const rel = g.pick(["father", "mother", "uncle", "aunt"]);
    const a = g.int(2, 15), k = g.int(2, 5), y = g.int(2, 20);
    const f = g.calc(a, "*", k), r = g.calc(f.v, "+", y);
    return {
      q: `${p.name} is ${a} years old. ${_cap(p.his)} ${rel} is ${k} times as old as ${p.him}. ` +
        `How old will ${p.his} ${rel} be in ${y} years?`,
      steps: [
        `${_cap(p.his)} ${rel} is ${f.text} years old.`,
        `In ${y} years, the ${rel} will be ${r.text} years old.`,
      ],
    };
  },
  ages_past: (g) => {
    const [p, o] = g.people(2);
    const a = g.int(2, 20), k = g.int(2, 4);
    const m = g.calc(a, "*", k);
    const y = g.int(2, m.v - 2);
    const r = g.calc(m.v, "-", y);
    return {
      q: `${p.name} is ${a} years old. ${o.name} is ${k} times as old as ${p.name}. ` +
        `How old was ${o.name} ${y} years ago?`,
      steps: [`${o.name} is ${m.text} years old.`, `${y} years ago, ${o.name} was ${r.text} years old.`],
    };
  },
  drive_more: (g) => {
    const s = g.int(20, 70), t = g.int(2, 9), d = g.int(5, 200);
    const x = g.calc(s, "*", t), r = g.calc(x.v, "+", d);
    return {
      q: `A car drives at ${s} miles per hour for ${t} hours. Then it drives ${d} more miles. ` +
        `How many miles does it drive in total?`,
      steps: [`First the car drives ${x.text} miles.`, `In total it drives ${r.text} miles.`],
    };
  },
  walk_run: (g) => {
    const p = g.person();
    const s = g.int(2, 5), t = g.int(2, 6), u = g.int(5, 12), v = g.int(2, 5);
    const x = g.calc(s, "*", t), y = g.calc(u, "*", v), r = g.calc(x.v, "+", y.v);
    return {
      q: `${p.name} walks at ${s} miles per hour for ${t} hours. Then ${p.he} runs at ${u} miles per hour ` +
        `for ${v} hours. How many miles does ${p.he} go in total?`,
      steps: [
        `${_cap(p.he)} walks ${x.text} miles.`,
        `${_cap(p.he)} runs ${y.text} miles.`,
        `${_cap(p.he)} goes ${r.text} miles in total.`,
      ],
    };
  },
  train_rate: (g) => {
    const speed = g.int(10, 90), t = g.int(2, 8), u = g.int(2, 10);
    if (u === t) throw new _Reject();
    const d = speed * t;
    const s = g.calc(d, "/", t), r = g.calc(s.v, "*", u);
    return {
      q: `A train goes ${d} miles in ${t} hours. How many miles does it go in ${u} hours?`,
      steps: [`The train goes ${s.text} miles per hour.`, `In ${u} hours it goes ${r.text} miles.`],
    };
  },
  class_join: (g) => {
    const n = g.int(3, 12), k = g.int(2, 8), j = g.int(2, 20);
    const x = g.calc(n, "*", k), r = g.calc(x.v, "+", j);
    return {
      q: `A class has ${n} groups of ${k} students. Then ${j} more students join. ` +
        `How many students are in the class now?`,
      steps: [`The class has ${x.text} students.`, `Now it has ${r.text} students.`],
    };
  },
  groups_pencils: (g) => {
    const k = g.int(2, 8), groups = g.int(2, 15), pencils = g.int(2, 12);
    const n = k * groups;
    const gr = g.calc(n, "/", k), r = g.calc(gr.v, "*", pencils);
    return {
      q: `A teacher has ${n} students. She puts them in groups of ${k}. Each group gets ${pencils} pencils. ` +
        `How many pencils does she need?`,
      steps: [`There are ${gr.text} groups.`, `She needs ${r.text} pencils.`],
    };
  },
  discount: (g) => {
    const x = g.pick(_GOODS);
    const [q, step] = g.pick(_PERCENTS);
    const price = step * g.int(1, Math.floor(400 / step));
    const d = g.calc(price, "*", q, "/", 100), r = g.calc(price, "-", d.v);
    return {
      q: `A ${x.one} costs ${price} dollars. The store gives ${q}% off. ` +
        `How many dollars does the ${x.one} cost now?`,
      steps: [`The discount is ${d.text} dollars.`, `The ${x.one} costs ${r.text} dollars now.`],
    };
  },
  percent_not: (g) => {
    const sport = g.pick(["soccer", "chess", "tennis", "music"]);
    const [q, step] = g.pick(_PERCENTS);
    const n = step * g.int(2, Math.floor(900 / step));
    const s = g.calc(n, "*", q, "/", 100), r = g.calc(n, "-", s.v);
    return {
      q: `There are ${n} students in a school. ${q}% of them play ${sport}. ` +
        `How many students do not play ${sport}?`,
      steps: [`The students who play ${sport} are ${s.text}.`, `The students who do not play are ${r.text}.`],
    };
  },
  raise: (g) => {
    const p = g.person();
    const [q, step] = g.pick(_PERCENTS);
    const w = step * g.int(2, Math.floor(600 / step));
    const x = g.calc(w, "*", q, "/", 100), r = g.calc(w, "+", x.v);
    return {
      q: `${p.name} earns ${w} dollars a week. ${_cap(p.he)} gets a ${q}% raise. ` +
        `How many dollars does ${p.he} earn a week now?`,
      steps: [`The raise is ${x.text} dollars.`, `${_cap(p.he)} earns ${r.text} dollars a week now.`],
    };
  },
  save_spend: (g) => {
    const p = g.person();
    const x = g.pick(_GOODS);
    const a = g.int(3, 50), w = g.int(2, 12);
    const s = g.calc(a, "*", w);
    const c = g.int(2, s.v - 2);
    const r = g.calc(s.v, "-", c);
    return {
      q: `${p.name} saves ${a} dollars each week. After ${w} weeks, ${p.he} spends ${c} dollars on a ${x.one}. ` +
        `How many dollars does ${p.he} have left?`,
      steps: [`${_cap(p.he)} saves ${s.text} dollars.`, `${_cap(p.he)} has ${r.text} dollars left.`],
    };
  },
  half_buy: (g) => {
    const [p, o] = g.people(2);
    const x = g.pick(_THINGS);
    const a = 2 * g.int(2, 100), b = g.int(2, 50);
    const h = g.calc(a, "/", 2), l = g.calc(a, "-", h.v), r = g.calc(l.v, "+", b);
    return {
      q: `${p.name} has ${a} ${x.many}. ${_cap(p.he)} gives half of them to ${o.name}. ` +
        `Then ${p.he} buys ${b} more. How many ${x.many} does ${p.name} have now?`,
      steps: [
        `${_cap(p.he)} gives ${h.text} ${x.many} to ${o.name}.`,
        `${_cap(p.he)} has ${l.text} ${x.many} left.`,
        `${_cap(p.he)} has ${r.text} ${x.many} now.`,
      ],
    };
  },
  pages_times: (g) => {
    const p = g.person();
    const a = g.int(5, 60), k = g.int(2, 5);
    const t = g.calc(a, "*", k), r = g.calc(a, "+", t.v);
    return {
      q: `${p.name} reads ${a} pages on Monday. ${_cap(p.he)} reads ${k} times as many pages on Tuesday. ` +
        `How many pages does ${p.he} read in the two days?`,
      steps: [
        `On Tuesday ${p.he} reads ${t.text} pages.`,
        `${_cap(p.he)} reads ${r.text} pages in the two days.`,
      ],
    };
  },
  farm_legs: (g) => {
    const two = g.pick(["chickens", "ducks", "geese"]);
    const four = g.pick(["cows", "pigs", "goats", "sheep", "horses"]);
    const a = g.int(2, 60), b = g.int(2, 60);
    const x = g.calc(a, "*", 2), y = g.calc(b, "*", 4), r = g.calc(x.v, "+", y.v);
    return {
      q: `A farm has ${a} ${two} and ${b} ${four}. How many legs do the animals have in total?`,
      steps: [
        `The ${two} have ${x.text} legs.`,
        `The ${four} have ${y.text} legs.`,
        `The animals have ${r.text} legs.`,
      ],
    };
  },
  wheels: (g) => {
    const [small, ws] = g.pick([["bikes", 2], ["tricycles", 3]] as const);
    const a = g.int(2, 60), b = g.int(2, 60);
    const x = g.calc(a, "*", ws), y = g.calc(b, "*", 4), r = g.calc(x.v, "+", y.v);
    return {
      q: `A parking lot has ${a} ${small} and ${b} cars. How many wheels are there in total?`,
      steps: [
        `The ${small} have ${x.text} wheels.`,
        `The cars have ${y.text} wheels.`,
        `There are ${r.text} wheels.`,
      ],
    };
  },
  theater: (g) => {
    const rows = g.int(3, 30), seats = g.int(5, 30);
    const t = g.calc(rows, "*", seats);
    const e = g.int(2, t.v - 2);
    const r = g.calc(t.v, "-", e);
    return {
      q: `A theater has ${rows} rows with ${seats} seats in each row. ${e} seats are empty. ` +
        `How many people are in the theater?`,
      steps: [`The theater has ${t.text} seats.`, `There are ${r.text} people in the theater.`],
    };
  },
  bake_sell: (g) => {
    const p = g.person();
    const x = g.pick(_BAKED);
    const k = g.int(2, 12), boxes = g.int(2, 30), price = g.int(2, 20);
    const n = k * boxes;
    const b = g.calc(n, "/", k), r = g.calc(b.v, "*", price);
    return {
      q: `${p.name} bakes ${n} ${x.many}. ${_cap(p.he)} puts ${k} ${x.many} in each box. ` +
        `${_cap(p.he)} sells each box for ${price} dollars. How many dollars does ${p.he} make?`,
      steps: [`${_cap(p.he)} fills ${b.text} boxes.`, `${_cap(p.he)} makes ${r.text} dollars.`],
    };
  },
  wage: (g) => {
    const p = g.person();
    const h = g.int(2, 10), d = g.int(2, 7), w = g.int(5, 30);
    const t = g.calc(h, "*", d), r = g.calc(t.v, "*", w);
    return {
      q: `${p.name} works ${h} hours a day for ${d} days. ${_cap(p.he)} earns ${w} dollars per hour. ` +
        `How many dollars does ${p.he} earn?`,
      steps: [`${_cap(p.he)} works ${t.text} hours.`, `${_cap(p.he)} earns ${r.text} dollars.`],
    };
  },
  weeks_daily: (g) => {
    const p = g.person();
    const a = g.int(2, 12), w = g.int(2, 10);
    const d = g.calc(w, "*", 7), r = g.calc(d.v, "*", a);
    return {
      q: `${p.name} drinks ${a} cups of water each day. How many cups does ${p.he} drink in ${w} weeks?`,
      steps: [`${w} weeks have ${d.text} days.`, `${_cap(p.he)} drinks ${r.text} cups.`],
    };
  },
  minutes_hours: (g) => {
    const p = g.person();
    const m = g.pick([10, 15, 20, 30, 40, 45, 60, 90]);
    // d days with m * d a multiple of 60.
    const unit = 60 / _gcd(60, m);
    const d = unit * g.int(1, Math.floor(30 / unit));
    const t = g.calc(m, "*", d), h = g.calc(t.v, "/", 60);
    if (h.v < 2) throw new _Reject();
    return {
      q: `${p.name} practices the piano for ${m} minutes each day. ` +
        `How many hours does ${p.he} practice in ${d} days?`,
      steps: [`${_cap(p.he)} practices ${t.text} minutes.`, `That is ${h.text} hours.`],
    };
  },
  spend_two: (g) => {
    const p = g.person();
    const x = g.pick(_GOODS);
    const a = g.int(2, 40), b = g.int(2, 90);
    const s = g.calc(a, "+", b);
    const m = g.int(s.v + 1, Math.min(g.max, s.v + 200));
    const r = g.calc(m, "-", s.v);
    return {
      q: `${p.name} has ${m} dollars. ${_cap(p.he)} spends ${a} dollars on lunch ` +
        `and ${b} dollars on a ${x.one}. ` +
        `How many dollars does ${p.he} have left?`,
      steps: [`${_cap(p.he)} spends ${s.text} dollars.`, `${_cap(p.he)} has ${r.text} dollars left.`],
    };
  },
  more_fewer: (g) => {
    const [p, o, k] = g.people(3);
    const x = g.pick(_THINGS);
    const a = g.int(5, 80), b = g.int(2, 40);
    const m = g.calc(a, "+", b);
    const c = g.int(2, m.v - 2);
    const kk = g.calc(m.v, "-", c), s = g.calc(a, "+", m.v), r = g.calc(s.v, "+", kk.v);
    return {
      q: `${p.name} has ${a} ${x.many}. ${o.name} has ${b} more ${x.many} than ${p.name}. ` +
        `${k.name} has ${c} fewer ${x.many} than ${o.name}. How many ${x.many} do they have in total?`,
      steps: [
        `${o.name} has ${m.text} ${x.many}.`,
        `${k.name} has ${kk.text} ${x.many}.`,
        `${p.name} and ${o.name} have ${s.text} ${x.many}.`,
        `They have ${r.text} ${x.many} in total.`,
      ],
    };
  },
  times_together: (g) => {
    const [p, o] = g.people(2);
    const x = g.pick(_THINGS);
    const [word, k] = g.pick([["twice", 2], ["three times", 3], ["four times", 4]] as const);
    const a = g.int(3, 100);
    const m = g.calc(a, "*", k), r = g.calc(a, "+", m.v);
    return {
      q: `${p.name} has ${a} ${x.many}. ${o.name} has ${word} as many ${x.many} as ${p.name}. ` +
        `How many ${x.many} do they have together?`,
      steps: [`${o.name} has ${m.text} ${x.many}.`, `They have ${r.text} ${x.many} together.`],
    };
  },
  unit_price: (g) => {
    const p = g.person();
    const x = g.pick(_GOODS);
    const price = g.int(2, 40), k = g.int(2, 9), j = g.int(2, 15);
    if (j === k) throw new _Reject();
    const t = price * k;
    const one = g.calc(t, "/", k), r = g.calc(j, "*", one.v);
    return {
      q: `${p.name} pays ${t} dollars for ${k} ${x.many}. How many dollars does ${p.he} pay for ${j} ${x.many}?`,
      steps: [`One ${x.one} costs ${one.text} dollars.`, `${_cap(p.he)} pays ${r.text} dollars.`],
    };
  },
  garden: (g) => {
    const [plant, fruit] = g.pick(
      [
        [{ one: "apple tree", many: "apple trees" }, "apples"],
        [{ one: "orange tree", many: "orange trees" }, "oranges"],
        [{ one: "tomato plant", many: "tomato plants" }, "tomatoes"],
        [{ one: "pepper plant", many: "pepper plants" }, "peppers"],
      ] as const,
    );
    const rows = g.int(2, 10), k = g.int(2, 12), f = g.int(2, 20);
    const t = g.calc(rows, "*", k), r = g.calc(t.v, "*", f);
    return {
      q: `A garden has ${rows} rows of ${plant.many}. Each row has ${k} ${plant.many}. ` +
        `Each ${plant.one} gives ${f} ${fruit}. How many ${fruit} does the garden give?`,
      steps: [`The garden has ${t.text} ${plant.many}.`, `It gives ${r.text} ${fruit}.`],
    };
  },
  tank: (g) => {
    const rate = g.int(2, 20), minutes = g.int(2, 40);
    const need = rate * minutes;
    const a = g.int(2, 300);
    const c = need + a;
    if (c > g.max) throw new _Reject();
    const n = g.calc(c, "-", a), m = g.calc(n.v, "/", rate);
    return {
      q: `A tank holds ${c} liters of water. It has ${a} liters now. A hose adds ${rate} liters each minute. ` +
        `How many minutes does it take to fill the tank?`,
      steps: [`The tank needs ${n.text} more liters.`, `It takes ${m.text} minutes.`],
    };
  },
  pizza: (g) => {
    const p = g.person();
    const friends = g.int(1, 9);
    const people = friends + 1;
    const slices = g.pick([6, 8, 10, 12]);
    // p pizzas with p * slices a multiple of the number of people.
    const unit = people / _gcd(people, slices);
    const pizzas = unit * g.int(1, Math.max(1, Math.floor(12 / unit)));
    const t = g.calc(pizzas, "*", slices), n = g.calc(friends, "+", 1), r = g.calc(t.v, "/", n.v);
    return {
      q: `${p.name} orders ${pizzas} ${pizzas === 1 ? "pizza" : "pizzas"}. ` +
        `Each pizza has ${slices} slices. ` +
        `${_cap(p.he)} shares them equally with ${friends} ${friends === 1 ? "friend" : "friends"}. ` +
        `How many slices does each person get?`,
      steps: [
        `There are ${t.text} slices.`,
        `There are ${n.text} people.`,
        `Each person gets ${r.text} slices.`,
      ],
    };
  },
  album: (g) => {
    const p = g.person();
    const [thing, place] = g.pick([
      ["stamps", "page"],
      ["photos", "page"],
      ["stickers", "page"],
      ["cards", "row"],
    ]);
    const k = g.int(2, 12), pages = g.int(2, 40);
    const total = k * pages;
    const a = g.int(2, total - 2);
    const t = g.calc(a, "+", total - a), r = g.calc(t.v, "/", k);
    return {
      q: `${p.name} has ${a} ${thing}. ${_cap(p.he)} gets ${total - a} more ${thing}. ` +
        `${_cap(p.he)} puts ${k} ${thing} on each ${place}. How many ${place}s does ${p.he} fill?`,
      steps: [`${_cap(p.he)} has ${t.text} ${thing}.`, `${_cap(p.he)} fills ${r.text} ${place}s.`],
    };
  },
  fence: (g) => {
    const l = g.int(3, 40), w = g.int(2, 30), price = g.int(2, 9);
    const x = g.calc(l, "*", 2),
      y = g.calc(w, "*", 2),
      f = g.calc(x.v, "+", y.v),
      r = g.calc(f.v, "*", price);
    return {
      q: `A garden is ${l} meters long and ${w} meters wide. A fence costs ${price} dollars per meter. ` +
        `How many dollars does a fence around the garden cost?`,
      steps: [
        `The two long sides are ${x.text} meters.`,
        `The two short sides are ${y.text} meters.`,
        `The fence is ${f.text} meters long.`,
        `It costs ${r.text} dollars.`,
      ],
    };
  },
  average: (g) => {
    const p = g.person();
    const mean = g.int(5, 90);
    const a = g.int(Math.max(0, mean - 20), mean + 20), b = g.int(Math.max(0, mean - 20), mean + 20);
    const c = 3 * mean - a - b;
    if (c < 0) throw new _Reject();
    const x = g.calc(a, "+", b), t = g.calc(x.v, "+", c), r = g.calc(t.v, "/", 3);
    return {
      q: `${p.name} scores ${a}, ${b} and ${c} points in three games. What is ${p.his} average score?`,
      steps: [
        `In the first two games ${p.he} scores ${x.text} points.`,
        `In all three games ${p.he} scores ${t.text} points.`,
        `${_cap(p.his)} average is ${r.text} points.`,
      ],
    };
  },
  week_run: (g) => {
    const p = g.person();
    const a = g.int(2, 15), b = g.int(2, 25);
    const x = g.calc(a, "*", 5), y = g.calc(b, "*", 2), r = g.calc(x.v, "+", y.v);
    return {
      q: `${p.name} runs ${a} miles each weekday and ${b} miles each day of the weekend. ` +
        `How many miles does ${p.he} run in a week?`,
      steps: [
        `On the weekdays ${p.he} runs ${x.text} miles.`,
        `On the weekend ${p.he} runs ${y.text} miles.`,
        `${_cap(p.he)} runs ${r.text} miles in a week.`,
      ],
    };
  },
  jar_split: (g) => {
    const [p, o] = g.people(2);
    const x = g.pick(_BAKED);
    const each = g.int(2, 60), a = g.int(2, 30), b = g.int(2, 30);
    const n = 2 * each + a + b;
    const e = g.calc(a, "+", b), l = g.calc(n, "-", e.v), r = g.calc(l.v, "/", 2);
    return {
      q: `A jar has ${n} ${x.many}. ${p.name} eats ${a} ${x.many} and ${o.name} eats ${b} ${x.many}. ` +
        `They split the rest equally. How many ${x.many} does each of them get?`,
      steps: [
        `They eat ${e.text} ${x.many}.`,
        `There are ${l.text} ${x.many} left.`,
        `Each of them gets ${r.text} ${x.many}.`,
      ],
    };
  },
  profit: (g) => {
    const p = g.person();
    const x = g.pick(_GOODS);
    const k = g.int(2, 20), cost = g.int(2, 30), sell = g.int(cost + 1, cost + 20);
    const c = g.calc(k, "*", cost), s = g.calc(k, "*", sell), r = g.calc(s.v, "-", c.v);
    return {
      q: `${p.name} buys ${k} ${x.many} for ${cost} dollars each. ` +
        `${_cap(p.he)} sells each one for ${sell} dollars. ` +
        `How many dollars of profit does ${p.he} make?`,
      steps: [
        `${_cap(p.he)} pays ${c.text} dollars.`,
        `${_cap(p.he)} gets ${s.text} dollars.`,
        `${_cap(p.his)} profit is ${r.text} dollars.`,
      ],
    };
  },
  tickets: (g) => {
    const a = g.int(2, 9), b = g.int(2, 12), pa = g.int(5, 40), pb = g.int(2, 30);
    const x = g.calc(a, "*", pa), y = g.calc(b, "*", pb), r = g.calc(x.v, "+", y.v);
    return {
      q: `A family buys ${a} adult tickets and ${b} child tickets. An adult ticket costs ${pa} dollars. ` +
        `A child ticket costs ${pb} dollars. How many dollars do they pay?`,
      steps: [
        `The adult tickets cost ${x.text} dollars.`,
        `The child tickets cost ${y.text} dollars.`,
        `They pay ${r.text} dollars.`,
      ],
    };
  },
  shelves: (g) => {
    const x = g.pick(_THINGS);
    const s = g.int(2, 12), b = g.int(2, 10), k = g.int(2, 20);
    const t = g.calc(s, "*", b), r = g.calc(t.v, "*", k);
    return {
      q: `A store has ${s} shelves. Each shelf holds ${b} boxes. Each box has ${k} ${x.many}. ` +
        `How many ${x.many} are in the store?`,
      steps: [`The store has ${t.text} boxes.`, `There are ${r.text} ${x.many} in the store.`],
    };
  },
  bus_stops: (g) => {
    const a = g.int(5, 60), off = g.int(2, a - 2), on = g.int(2, 40), off2 = g.int(2, 30);
    const x = g.calc(a, "-", off), y = g.calc(x.v, "+", on);
    if (off2 > y.v - 2) throw new _Reject();
    const r = g.calc(y.v, "-", off2);
    return {
      q: `A bus has ${a} people. At the first stop ${off} people get off and ${on} people get on. ` +
        `At the second stop ${off2} people get off. How many people are on the bus now?`,
      steps: [
        `After ${off} get off, there are ${x.text} people.`,
        `After ${on} get on, there are ${y.text} people.`,
        `Now there are ${r.text} people on the bus.`,
      ],
    };
  },
};

function _gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * Names of the templates, in the order the generator draws from.
 *
 * @example Counting them
 * ```ts
 * import { TEMPLATE_NAMES } from "./gsm_synth.ts";
 * console.log(TEMPLATE_NAMES.length); // 41
 * ```
 */
export const TEMPLATE_NAMES: readonly string[] = Object.freeze(Object.keys(_TEMPLATES));

// ===================================================================================================
// Generation and splits
// ===================================================================================================

/** FNV-1a over UTF-16 code units. */
function _fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * The split a question belongs to: `"heldout"` when the FNV-1a hash of its text is divisible by 8
 * (about one question in eight), else `"train"`.
 *
 * @param question the question text
 * @returns its split
 *
 * @example
 * ```ts
 * import { splitOf } from "./gsm_synth.ts";
 * console.log(splitOf("Ann has 3 apples. How many apples does Ann have?"));
 * ```
 */
export function splitOf(question: string): Split {
  return _fnv1a(question) % 8 === 0 ? "heldout" : "train";
}

/**
 * Draws `count` distinct problems of one split, deterministically from `seed`. Templates are drawn
 * uniformly; a draw whose question is in the other split or was already drawn is skipped.
 *
 * @param options seed, count, split and optional template subset
 * @returns the problems
 * @throws {RangeError} for a negative or non-integer count or an unknown template name, or when
 *   the templates cannot produce `count` distinct problems of the split
 *
 * @example Training and held-out problems
 * ```ts
 * import { generateProblems } from "./gsm_synth.ts";
 * const train = generateProblems({ seed: 1, count: 1000, split: "train" });
 * const heldout = generateProblems({ seed: 2, count: 100, split: "heldout" });
 * console.log(heldout[0].question);
 * ```
 */
export function generateProblems(options: GenerateProblemsOptions): Problem[] {
  const { seed, count } = options;
  const split = options.split ?? "train";
  if (!Number.isInteger(count) || count < 0) {
    throw new RangeError(`Cannot generate ${count} problems: the count must be a non-negative integer`);
  }
  if (split !== "train" && split !== "heldout") {
    throw new RangeError(`Unknown split "${split}"; use "train" or "heldout"`);
  }
  const names = options.templates ?? TEMPLATE_NAMES;
  const maxValue = options.maxValue ?? MAX_VALUE;
  if (!Number.isInteger(maxValue) || maxValue < 10) {
    throw new RangeError(`maxValue ${maxValue} is too small: use an integer of at least 10`);
  }
  for (const n of names) {
    if (!Object.hasOwn(_TEMPLATES, n)) {
      throw new RangeError(`Unknown template "${n}"; choose from ${TEMPLATE_NAMES.join(", ")}`);
    }
  }
  if (names.length === 0 && count > 0) throw new RangeError("Cannot generate problems from no templates");
  const rand = seededRandom(seed);
  const seen = new Set<string>();
  const out: Problem[] = [];
  // Generous: heldout keeps 1 draw in 8, and rejections are rare.
  const maxDraws = 100 * count + 10_000;
  // A template is redrawn until it yields a problem (up to a limit), so that templates whose draws
  // are often rejected (large products under a small maxValue) keep their share of the data.
  // A template that fails that often in a row has run out of new questions and is dropped.
  const triesPerTemplate = 1000;
  const live = [...names];
  let name = "", tries = 0;
  for (let draws = 0; out.length < count; draws++) {
    if (tries === triesPerTemplate) {
      live.splice(live.indexOf(name), 1);
      tries = 0;
    }
    if (draws >= maxDraws || live.length === 0) {
      throw new RangeError(
        `Cannot generate ${count} distinct "${split}" problems from ${names.length} template(s): ` +
          `only ${out.length} after ${draws} draws; ask for fewer or use more templates`,
      );
    }
    if (tries++ === 0) name = live[Math.floor(rand() * live.length)];
    const g = new _Builder(rand, maxValue);
    let drawn: { q: string; steps: string[] };
    try {
      drawn = _TEMPLATES[name](g);
    } catch (e) {
      if (e instanceof _Reject) continue;
      throw e;
    }
    if (splitOf(drawn.q) !== split || seen.has(drawn.q)) continue;
    seen.add(drawn.q);
    tries = 0;
    out.push({ question: drawn.q, answer: `${drawn.steps.join("\n")}\n#### ${g.last}`, template: name });
  }
  return out;
}

// ===================================================================================================
// Answers, corpus, files
// ===================================================================================================

/** The text of one training document: `<s>` + GSM8K prompt + answer + `</s>`. */
function _document(p: Problem): string {
  return `<s>${formatPrompt("gsm8k", { question: p.question })}${p.answer}</s>`;
}

/**
 * Pretraining text: one document per problem, `<s>` + `formatPrompt("gsm8k", {question})` +
 * answer + `</s>`, concatenated with no other separator. Tokenizers whose `<s>` and `</s>` are
 * special tokens (train/bpe.ts's, Llama's) turn that text into BOS + prompt + answer + EOS per
 * document (the normalizer's leading "▁" restarts after each special token, exactly as when a
 * prompt is encoded alone), so `tokenizer.encode(corpus(ps), { addBos: false })` equals
 * `encodeDocuments(tokenizer, ps).flat()`.
 *
 * @param problems the problems
 * @returns the corpus text
 *
 * @example
 * ```ts
 * import { corpus, generateProblems } from "./gsm_synth.ts";
 * const text = corpus(generateProblems({ seed: 1, count: 10 }));
 * console.log(text.slice(0, 40)); // "<s>Question:\n..."
 * ```
 */
export function corpus(problems: readonly Problem[]): string {
  return problems.map(_document).join("");
}

/**
 * Problems as JSON Lines with `question` and `answer` fields (GSM8K's `test.jsonl` layout; the
 * template name is kept as a third field).
 *
 * @param problems the problems
 * @returns the file text, one problem per line, ending with a newline
 *
 * @example Writing a held-out set
 * ```ts ignore
 * await Deno.writeTextFile("heldout.jsonl", problemsToJsonl(generateProblems({ seed: 2, count: 200, split: "heldout" })));
 * ```
 */
export function problemsToJsonl(problems: readonly Problem[]): string {
  return problems.map((p) => JSON.stringify(p)).join("\n") + (problems.length ? "\n" : "");
}
