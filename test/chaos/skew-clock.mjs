// Preloaded into an agent process (node --import) to skew its wall clock by
// GPUAI_CHAOS_CLOCK_SKEW_MS, as a host whose clock drifted would be: Date.now() and new Date() move,
// the monotonic clock (performance.now, timers) does not. Plain JavaScript so that it loads before
// the agent's TypeScript loader.
const skewMs = Number(process.env.GPUAI_CHAOS_CLOCK_SKEW_MS ?? '0');
if (Number.isFinite(skewMs) && skewMs !== 0) {
  const RealDate = Date;
  const realNow = RealDate.now.bind(RealDate);
  class SkewedDate extends RealDate {
    constructor(...args) {
      if (args.length === 0) super(realNow() + skewMs);
      else super(...args);
    }
    static now() {
      return realNow() + skewMs;
    }
  }
  globalThis.Date = SkewedDate;
}
