using System;
using System.Diagnostics;
using System.Threading;
using System.Threading.Tasks;

namespace Gaia.Realtime
{
    /// <summary>Deadlines and cancellation for the client's awaits, none of which needs the dispatcher's thread.</summary>
    internal static class Waiters
    {
        private static readonly Stopwatch Clock = Stopwatch.StartNew();

        /// <summary>Monotonic milliseconds.</summary>
        internal static long Now
        {
            get { return Clock.ElapsedMilliseconds; }
        }

        /// <summary>A task source whose continuations never run inline on the thread that completes it.</summary>
        internal static TaskCompletionSource<T> Source<T>()
        {
            return new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        /// <summary>The task's result, or TimeoutException at the deadline (monotonic ms), or OperationCanceledException.</summary>
        internal static async Task<T> Within<T>(Task<T> task, long deadline, CancellationToken cancel, string what)
        {
            var left = deadline - Now;
            if (!task.IsCompleted)
            {
                if (left <= 0)
                    throw new TimeoutException("no " + what + " in time");
                using (var stop = CancellationTokenSource.CreateLinkedTokenSource(cancel))
                {
                    var first = await Task.WhenAny(task, Task.Delay(TimeSpan.FromMilliseconds(left), stop.Token)).ConfigureAwait(false);
                    stop.Cancel();
                    if (first != task)
                    {
                        cancel.ThrowIfCancellationRequested();
                        throw new TimeoutException("no " + what + " within " + TimeSpan.FromMilliseconds(left));
                    }
                }
            }
            return await task.ConfigureAwait(false);
        }

        /// <summary>The task's end, or TimeoutException at the deadline (monotonic ms), or OperationCanceledException.</summary>
        internal static Task Within(Task task, long deadline, CancellationToken cancel, string what)
        {
            return Within(Done(task), deadline, cancel, what);
        }

        private static async Task<bool> Done(Task task)
        {
            await task.ConfigureAwait(false);
            return true;
        }

        /// <summary>The task's result, or OperationCanceledException when <paramref name="cancel"/> fires first.</summary>
        internal static async Task<T> Cancellable<T>(Task<T> task, CancellationToken cancel)
        {
            if (!task.IsCompleted && cancel.CanBeCanceled)
            {
                var cancelled = Source<bool>();
                using (cancel.Register(() => cancelled.TrySetResult(true)))
                    await Task.WhenAny(task, cancelled.Task).ConfigureAwait(false);
                cancel.ThrowIfCancellationRequested();
            }
            return await task.ConfigureAwait(false);
        }
    }
}
