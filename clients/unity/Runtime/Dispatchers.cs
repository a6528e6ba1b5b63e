using System;
using System.Collections.Concurrent;

namespace Gaia.Realtime
{
    /// <summary>Runs the client's callbacks and state changes on the thread the game owns.</summary>
    public interface IDispatcher
    {
        /// <summary>Queue an action for the game's thread (called from the socket's thread).</summary>
        void Post(Action action);
    }

    /// <summary>
    /// A plain queue: the socket thread posts, the owner of the main thread calls <see cref="Drain"/>
    /// (in Unity every frame from Update; in a console program from its loop). Every event handler
    /// and every change to <see cref="LocalWorld"/> then runs on that one thread, so game code never
    /// needs a lock. Exceptions thrown by game handlers are caught by the client and reported
    /// through <see cref="GaiaClient.HandlerFailed"/>: Drain() does not throw them.
    /// </summary>
    public sealed class QueueDispatcher : IDispatcher
    {
        private readonly ConcurrentQueue<Action> queue = new ConcurrentQueue<Action>();

        /// <inheritdoc />
        public void Post(Action action)
        {
            queue.Enqueue(action);
        }

        /// <summary>Run up to <paramref name="max"/> queued actions; returns how many ran.</summary>
        public int Drain(int max = int.MaxValue)
        {
            int ran = 0;
            Action action;
            while (ran < max && queue.TryDequeue(out action))
            {
                action();
                ran++;
            }
            return ran;
        }

        /// <summary>How many actions wait for the next Drain().</summary>
        public int Pending
        {
            get { return queue.Count; }
        }
    }
}
