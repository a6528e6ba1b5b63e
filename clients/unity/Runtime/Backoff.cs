using System;

namespace Gaia.Realtime
{
    /// <summary>
    /// Exponential backoff with jitter: each retry waits between half and all of a ceiling that
    /// doubles from the initial delay up to the maximum, so players dropped together by a gateway
    /// restart do not all come back in the same instant.
    /// </summary>
    public sealed class Backoff
    {
        private readonly TimeSpan initial;
        private readonly TimeSpan max;
        private readonly Random random = new Random();
        private int attempt;

        public Backoff(TimeSpan initial, TimeSpan max)
        {
            this.initial = initial;
            this.max = max;
        }

        /// <summary>The delay before the next attempt (and count that attempt).</summary>
        public TimeSpan Next()
        {
            lock (random)
            {
                var ceiling = Math.Min(max.TotalMilliseconds, initial.TotalMilliseconds * Math.Pow(2, Math.Min(attempt, 16)));
                attempt++;
                return TimeSpan.FromMilliseconds(ceiling * (0.5 + random.NextDouble() / 2));
            }
        }

        /// <summary>A connection succeeded: the next drop starts from the initial delay again.</summary>
        public void Reset()
        {
            lock (random)
                attempt = 0;
        }
    }
}
