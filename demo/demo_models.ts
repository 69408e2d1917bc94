/**
 * What the demo and `make-models` agree on about the embedded models: the problems they were made
 * for.
 *
 * @module
 */

/** Largest number in the embedded models' problems; the demo draws its problems with it too. */
export const DEMO_MAX_VALUE = 50;
