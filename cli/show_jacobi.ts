/**
 * `--show-jacobi`: draws each block's Jacobi iterations, like the CLLM demo: the verified prefix
 * highlighted, tokens that are still changing dim, one line per forward pass.
 *
 * @module
 */

import type { BlockTrajectory } from "../decode/mod.ts";
import type { TextTokenizer } from "../model/mod.ts";

const BOLD_GREEN = "\x1b[1;32m";
const DIM = "\x1b[2m";
const RESET = "\x1b[0m";

/** Makes a token printable on one line: its vocabulary piece, with SentencePiece's ▁ as a space. */
function show(tokenizer: TextTokenizer, id: number): string {
  const piece = tokenizer.idToToken(id) ?? `<${id}>`;
  const byte = /^<0x([0-9A-F]{2})>$/.exec(piece);
  const text = byte ? String.fromCharCode(parseInt(byte[1], 16)) : piece.replaceAll("\u2581", " ");
  return JSON.stringify(text).slice(1, -1);
}

/**
 * Renders the trajectory of every block as text lines; with `color`, ANSI colours mark the
 * verified prefix (bold green) and the unverified guesses (dim).
 */
export function renderJacobi(
  trajectory: readonly BlockTrajectory[],
  tokenizer: TextTokenizer,
  color: boolean,
): string[] {
  const lines: string[] = [];
  for (const b of trajectory) {
    const fixed = b.states[b.states.length - 1];
    lines.push(`block ${b.block}: ${b.states.length} forward${b.states.length === 1 ? "" : "s"}`);
    b.states.forEach((state, t) => {
      let prefix = 0;
      while (prefix < state.length && state[prefix] === fixed[prefix]) prefix++;
      const parts = state.map((id, j) => {
        const text = show(tokenizer, id);
        if (!color) return j < prefix ? text : `[${text.trim()}]`;
        return j < prefix ? `${BOLD_GREEN}${text}${RESET}` : `${DIM}${text}${RESET}`;
      });
      lines.push(`  ${String(t).padStart(2)} ${parts.join("")}`);
    });
  }
  return lines;
}
