using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;
using Newtonsoft.Json;
using Newtonsoft.Json.Linq;

namespace Gaia.Realtime
{
    /// <summary>
    /// Requests and their answers: frames sent one at a time (waiting, until the deadline, for a
    /// connection a reconnect is bringing), answers matched by id or timestamp on the socket thread,
    /// and every waiter failed when its connection ends.
    /// </summary>
    public sealed partial class GaiaClient
    {
        private readonly SemaphoreSlim sendLock = new SemaphoreSlim(1, 1);
        private readonly ConcurrentDictionary<string, TaskCompletionSource<JObject>> answers =
            new ConcurrentDictionary<string, TaskCompletionSource<JObject>>();
        private readonly ConcurrentDictionary<long, TaskCompletionSource<JObject>> pings =
            new ConcurrentDictionary<long, TaskCompletionSource<JObject>>();
        private readonly List<SnapshotWaiter> snapshotWaiters = new List<SnapshotWaiter>();
        private int nextId;

        /// <summary><see cref="GetStateAsync"/>: a get_state, its snapshot received on the socket thread, applied on the dispatcher's.</summary>
        private async Task<LocalWorld> GetStateCore(CancellationToken cancel)
        {
            var deadline = Waiters.Now + (long)options.RequestTimeout.TotalMilliseconds;
            var waiter = new SnapshotWaiter();
            lock (snapshotWaiters)
                snapshotWaiters.Add(waiter);
            try
            {
                await SendWhenOpen(new JObject { { "type", "get_state" } }, deadline, cancel).ConfigureAwait(false);
                await Waiters.Within(waiter.Received.Task, deadline, cancel, "area_of_interest").ConfigureAwait(false);
                await Waiters.Cancellable(waiter.Applied.Task, cancel).ConfigureAwait(false);
                return World;
            }
            finally
            {
                lock (snapshotWaiters)
                    snapshotWaiters.Remove(waiter);
            }
        }

        /// <summary><see cref="PingAsync"/>: a ping whose pong is matched by its timestamp.</summary>
        private async Task<double> PingCore(CancellationToken cancel)
        {
            var deadline = Waiters.Now + (long)options.RequestTimeout.TotalMilliseconds;
            var stamp = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() * 1000 + Interlocked.Increment(ref nextId) % 1000;
            var waiter = Waiters.Source<JObject>();
            pings[stamp] = waiter;
            try
            {
                var clock = System.Diagnostics.Stopwatch.StartNew();
                await SendWhenOpen(new JObject { { "type", "ping" }, { "timestamp", stamp } }, deadline, cancel).ConfigureAwait(false);
                await Waiters.Within(waiter.Task, deadline, cancel, "pong").ConfigureAwait(false);
                return clock.Elapsed.TotalMilliseconds;
            }
            finally
            {
                TaskCompletionSource<JObject> ignored;
                pings.TryRemove(stamp, out ignored);
            }
        }

        private async Task<JObject> RequestAsync(JObject frame, CancellationToken cancel)
        {
            var deadline = Waiters.Now + (long)options.RequestTimeout.TotalMilliseconds;
            var id = "u" + Interlocked.Increment(ref nextId);
            frame["id"] = id;
            var waiter = Waiters.Source<JObject>();
            try
            {
                await SendWhenOpen(frame, deadline, cancel, () => answers[id] = waiter).ConfigureAwait(false);
                return await Waiters.Within(waiter.Task, deadline, cancel, "answer to " + frame["type"]).ConfigureAwait(false);
            }
            finally
            {
                TaskCompletionSource<JObject> ignored;
                answers.TryRemove(id, out ignored);
            }
        }

        /// <summary>Send on the open connection, waiting (until the deadline) for one that a reconnect is bringing.</summary>
        private async Task SendWhenOpen(JObject frame, long deadline, CancellationToken cancel, Action registered = null)
        {
            while (true)
            {
                var c = current;
                if (c != null && c.Established && c.Transport.IsOpen)
                {
                    if (registered != null)
                        registered();
                    await Send(c, frame, cancel).ConfigureAwait(false);
                    return;
                }
                if (stopped || Volatile.Read(ref comingBack) == 0 && Volatile.Read(ref reconnectLoop) == 0)
                    throw new GaiaConnectionException("not connected (and no reconnect under way)");
                var signal = opened.Task;
                if (signal.IsCompleted)
                    await Task.Delay(1).ConfigureAwait(false);  // a connection between its close and its replacement
                else
                    await Waiters.Within(signal, deadline, cancel, "connection for " + frame["type"]).ConfigureAwait(false);
                if (Waiters.Now >= deadline)
                    throw new TimeoutException("no connection for " + frame["type"] + " in time");
            }
        }

        private async Task Send(Connection c, JObject frame, CancellationToken cancel)
        {
            var text = frame.ToString(Formatting.None);
            await sendLock.WaitAsync(cancel).ConfigureAwait(false);
            try
            {
                await c.Transport.SendTextAsync(text, cancel).ConfigureAwait(false);
            }
            catch (Exception e) when (!(e is OperationCanceledException))
            {
                throw new GaiaConnectionException("the connection failed while sending: " + e.Message, e);
            }
            finally
            {
                sendLock.Release();
            }
        }

        /// <summary>The close frame (1000), never overlapping a send (ClientWebSocket allows one at a time).</summary>
        private async Task SendClose(Connection c, CancellationToken cancel)
        {
            await sendLock.WaitAsync(cancel).ConfigureAwait(false);
            try
            {
                await c.Transport.CloseAsync(CloseCodes.Normal, "bye", cancel).ConfigureAwait(false);
            }
            finally
            {
                sendLock.Release();
            }
        }

        /// <summary>On the socket thread: complete the request this answer is for (false if none waits for it).</summary>
        private bool Answer(string id, JObject frame)
        {
            TaskCompletionSource<JObject> waiter;
            if (id == null || !answers.TryRemove(id, out waiter))
                return false;
            waiter.TrySetResult(frame);
            return true;
        }

        /// <summary>On the socket thread: complete the ping (a game's, a second ConnectAsync's) this pong is for.</summary>
        private void AnswerPing(JObject frame)
        {
            TaskCompletionSource<JObject> pong;
            var stamp = frame["timestamp"];
            if (stamp != null && stamp.Type == JTokenType.Integer && pings.TryRemove((long)stamp, out pong))
                pong.TrySetResult(frame);
        }

        /// <summary>On the socket thread: a snapshot arrived, so every get_state waiting stops its timeout.</summary>
        private void SnapshotWaitersReceived()
        {
            lock (snapshotWaiters)
                foreach (var waiter in snapshotWaiters)
                    waiter.Received.TrySetResult(true);
        }

        /// <summary>On the dispatcher thread: the snapshot is applied, so every get_state waiting completes.</summary>
        private void SnapshotWaitersApplied()
        {
            SnapshotWaiter[] waiting;
            lock (snapshotWaiters)
            {
                waiting = snapshotWaiters.ToArray();
                snapshotWaiters.Clear();
            }
            foreach (var waiter in waiting)
                waiter.Applied.TrySetResult(true);
        }

        /// <summary>A connection ended: every request, ping, chat and get_state waiting on it fails.</summary>
        private void FailWaiters(string why)
        {
            foreach (var id in answers.Keys)
            {
                TaskCompletionSource<JObject> waiter;
                if (answers.TryRemove(id, out waiter))
                    waiter.TrySetException(new GaiaConnectionException(why + ": the request may or may not have been applied"));
            }
            foreach (var stamp in pings.Keys)
            {
                TaskCompletionSource<JObject> waiter;
                if (pings.TryRemove(stamp, out waiter))
                    waiter.TrySetException(new GaiaConnectionException(why));
            }
            FailChats(why);
            lock (snapshotWaiters)
            {
                foreach (var waiter in snapshotWaiters)
                    if (waiter.Received.TrySetException(new GaiaConnectionException(why + " before the snapshot")))
                        waiter.Applied.TrySetCanceled();
                snapshotWaiters.RemoveAll(w => w.Received.Task.IsFaulted);
            }
        }

        /// <summary>A get_state in flight: received on the socket thread, applied on the dispatcher's.</summary>
        private sealed class SnapshotWaiter
        {
            internal readonly TaskCompletionSource<bool> Received = Waiters.Source<bool>();
            internal readonly TaskCompletionSource<bool> Applied = Waiters.Source<bool>();
        }
    }
}
