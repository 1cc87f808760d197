/**
 * Resumable table builds. A rendezvous table has 65536 rows; building one costs rows ×
 * members score evaluations (milliseconds for a few members, seconds for a thousand), too much
 * to run on the event loop in one go while the balancer serves (src/control/time-slice.ts).
 * So each builder is a generator that yields after about STEP_EVALS evaluations; the control
 * plane resumes it in time slices, and `finish` runs one to the end in a single call (start-up,
 * tests). The result is the same either way: the builders only read their inputs, which the
 * caller must not change until the build returns.
 */

/** A build in progress: yields between bounded units of work, returns the built value. */
export type BuildSteps<T> = Generator<void, T, void>;

/** Score evaluations (or equivalent row work) between two yields: well under a millisecond. */
export const STEP_EVALS = 16384;

/** Runs a build to its end in one synchronous call. */
export function finish<T>(steps: BuildSteps<T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done === true) return r.value;
  }
}
