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
    /// One player's session with the gateway (docs/protocol.md). Frames are read on a background
    /// task; answers to awaits (actions, pings, `connected`) are matched there, so an await never
    /// waits for the game's next frame. Everything else (the local world, the roster, every event
    /// handler) runs on the dispatcher's thread, in arrival order. A dropped or silent socket is
    /// resumed with last_seq after a jittered, growing delay; 4401 stops and raises <see cref="AuthRequired"/>.
    /// </summary>
    public sealed partial class GaiaClient : IDisposable
    {
        private readonly GaiaClientOptions options;
        private readonly Backoff backoff;
        private readonly object gate = new object();
        private readonly SemaphoreSlim connectLock = new SemaphoreSlim(1, 1);
        private readonly SemaphoreSlim sendLock = new SemaphoreSlim(1, 1);
        private readonly ConcurrentDictionary<string, TaskCompletionSource<JObject>> answers =
            new ConcurrentDictionary<string, TaskCompletionSource<JObject>>();
        private readonly ConcurrentDictionary<long, TaskCompletionSource<JObject>> pings =
            new ConcurrentDictionary<long, TaskCompletionSource<JObject>>();
        private Connection current;
        private TaskCompletionSource<bool> opened = Waiters.Source<bool>();
        private long receivedSeq = -1;   // the resume cursor, as read off the wire
        private long handledSeq = -1;    // the last seq handled on the dispatcher thread
        private int nextId;
        private int comingBack;          // connects and reconnect loops under way: requests wait for them
        private int reconnectLoop;       // 1 while a reconnect loop runs
        private volatile bool stopped;

        /// <summary>A client that connects nothing yet.</summary>
        public GaiaClient(GaiaClientOptions options)
        {
            this.options = options;
            backoff = new Backoff(options.InitialBackoff, options.MaxBackoff);
            World = new LocalWorld();
            World.HandlerFailed = ReportHandlerFailure;
        }

        /// <summary>The player's world, kept current on the dispatcher's thread.</summary>
        public LocalWorld World { get; private set; }
        /// <summary>The user id the gateway knows this player by (from `connected`).</summary>
        public string UserId { get; private set; }
        /// <summary>The current connection's id (from `connected`).</summary>
        public string ConnectionId { get; private set; }
        /// <summary>Where events run.</summary>
        public IDispatcher Dispatcher { get { return options.Dispatcher; } }

        /// <summary>The resume cursor: the last stream sequence received (null before the first).</summary>
        public long? LastSeq
        {
            get { var seq = Interlocked.Read(ref receivedSeq); return seq < 0 ? (long?)null : seq; }
        }

        /// <summary>True while a session is established (`connected` received) and its socket open.</summary>
        public bool IsOpen
        {
            get { var c = current; return c != null && c.Established && c.Transport.IsOpen; }
        }

        /// <summary>`connected` was handled (every connection, resumes included).</summary>
        public event Action<JObject> Connected;
        /// <summary>A snapshot replaced the local world.</summary>
        public event Action<LocalWorld> SnapshotApplied;
        /// <summary>A `world_update` was handled; <see cref="WorldUpdate.Result"/> says whether it was applied.</summary>
        public event Action<WorldUpdate> WorldUpdated;
        /// <summary>Another player joined, left or moved (one per entry of a `presence_batch`).</summary>
        public event Action<PresenceChange> PresenceChanged;
        /// <summary>A resume replayed what a dropped connection missed.</summary>
        public event Action<ResumeInfo> Resumed;
        /// <summary>The cursor was too old; a fresh snapshot follows.</summary>
        public event Action<string> ResyncRequired;
        /// <summary>An `error` frame (also returned to the request it answers).</summary>
        public event Action<GaiaError> ErrorReceived;
        /// <summary>The socket closed; says whether the client resumes by itself.</summary>
        public event Action<CloseInfo> Closed;
        /// <summary>The gateway refused the token (4401): get a fresh one and build a new client.</summary>
        public event Action<int> AuthRequired;
        /// <summary>A piece of a chat's narrative (after the world change it tells of was applied).</summary>
        public event Action<ChatChunk> ChatChunkReceived;
        /// <summary>A game handler of one of these events threw; the client went on (log it here).</summary>
        public event Action<Exception> HandlerFailed;

        /// <summary>
        /// Open the socket (resuming after <see cref="LastSeq"/> if there is one) and wait for `connected`.
        /// On a client that is already connected it opens nothing: it checks the link with a ping and
        /// returns the current `connected` frame, or, if no pong comes within PongTimeout, cuts the
        /// dead socket and resumes on a new one.
        /// </summary>
        public async Task<JObject> ConnectAsync(CancellationToken cancel = default(CancellationToken))
        {
            stopped = false;
            return await ConnectCore(true, cancel).ConfigureAwait(false);
        }

        /// <summary>Send an action and return its `action_response` (or the `error` answering it), waiting for a reconnect if one is under way.</summary>
        public Task<JObject> ActAsync(string action, object args = null, CancellationToken cancel = default(CancellationToken))
        {
            var frame = args == null ? new JObject() : JObject.FromObject(args);
            frame["type"] = "action";
            frame["action"] = action;
            return RequestAsync(frame, cancel);
        }

        /// <summary>Ask for a fresh snapshot; completes once the dispatcher has applied it (its timeout stops when it arrives).</summary>
        public async Task<LocalWorld> GetStateAsync(CancellationToken cancel = default(CancellationToken))
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

        /// <summary>Round-trip time to the gateway in milliseconds (the pong is matched on the socket thread).</summary>
        public async Task<double> PingAsync(CancellationToken cancel = default(CancellationToken))
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

        /// <summary>Close cleanly (1000): the other players see this player leave at once; no reconnect.</summary>
        public async Task CloseAsync(CancellationToken cancel = default(CancellationToken))
        {
            stopped = true;
            var c = current;
            if (c == null || !c.Transport.IsOpen)
                return;
            try
            {
                await SendClose(c, cancel).ConfigureAwait(false);
                var deadline = Waiters.Now + (long)options.RequestTimeout.TotalMilliseconds;
                await Waiters.Within(c.Gone.Task, deadline, cancel, "close").ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                c.Transport.Abort();  // the gateway did not answer the close: cut it
            }
            catch (Exception e) when (!(e is OperationCanceledException))
            {
                c.Transport.Abort();
            }
        }

        /// <summary>Cut the connection without a close frame, as a lost network would; auto-reconnect resumes it.</summary>
        public void Abort()
        {
            var c = current;
            if (c != null)
                c.Transport.Abort();
        }

        /// <summary>Stop for good: a clean close (1000, so the others see a leave, not a drop), sent without blocking.</summary>
        public void Dispose()
        {
            stopped = true;
            var c = current;
            if (c == null)
                return;
            if (!c.Transport.IsOpen)
            {
                c.Transport.Abort();
                return;
            }
            SendClose(c, CancellationToken.None).ContinueWith(sent =>
            {
                if (sent.IsFaulted)
                    c.Transport.Abort();
                else
                    Task.Delay(options.RequestTimeout).ContinueWith(t => { if (current == c) c.Transport.Abort(); });
            });
        }

        private async Task<JObject> ConnectCore(bool verify, CancellationToken cancel)
        {
            Interlocked.Increment(ref comingBack);
            try
            {
                await connectLock.WaitAsync(cancel).ConfigureAwait(false);
                try
                {
                    var c = current;
                    if (c != null && c.Established && c.Transport.IsOpen)
                    {
                        if (!verify || await Answers(c, cancel).ConfigureAwait(false))
                            return c.Hello.Task.Result;
                        Cut(c, "no pong within " + options.PongTimeout + " on a second ConnectAsync");
                    }
                    return await Open(cancel).ConfigureAwait(false);
                }
                finally
                {
                    connectLock.Release();
                }
            }
            finally
            {
                Interlocked.Decrement(ref comingBack);
            }
        }

        /// <summary>True if the connection answers a ping within PongTimeout.</summary>
        private async Task<bool> Answers(Connection c, CancellationToken cancel)
        {
            var stamp = -Interlocked.Increment(ref nextId);
            var waiter = Waiters.Source<JObject>();
            pings[stamp] = waiter;
            try
            {
                await Send(c, new JObject { { "type", "ping" }, { "timestamp", stamp } }, cancel).ConfigureAwait(false);
                await Waiters.Within(waiter.Task, Waiters.Now + (long)options.PongTimeout.TotalMilliseconds, cancel, "pong")
                    .ConfigureAwait(false);
                return true;
            }
            catch (Exception e) when (!(e is OperationCanceledException))
            {
                return false;
            }
            finally
            {
                TaskCompletionSource<JObject> ignored;
                pings.TryRemove(stamp, out ignored);
            }
        }

        private async Task<JObject> Open(CancellationToken cancel)
        {
            var transport = options.Transport != null ? options.Transport() : new ClientWebSocketTransport();
            var c = new Connection(transport);
            lock (gate)
                current = c;
            var headers = new Dictionary<string, string>();
            if (options.TokenInHeader)
                headers["Authorization"] = "Bearer " + options.Token;
            try
            {
                await transport.ConnectAsync(BuildUri(LastSeq), headers, cancel).ConfigureAwait(false);
            }
            catch (Exception e)
            {
                lock (gate)
                    if (current == c)
                        current = null;
                transport.Dispose();
                if (e is OperationCanceledException)
                    throw;
                throw new GaiaConnectionException("could not open the socket to " + options.GatewayUrl + ": " + e.Message, e);
            }
            Interlocked.Exchange(ref c.LastHeardTicks, Waiters.Now);
            var reader = Task.Run(() => ReadLoop(c));        // ends with the socket; OnClosed takes it from there
            var heartbeat = Task.Run(() => Heartbeat(c));    // ends when the connection is replaced or closed
            GC.KeepAlive(reader);
            GC.KeepAlive(heartbeat);
            try
            {
                return await Waiters.Within(c.Hello.Task, Waiters.Now + (long)options.RequestTimeout.TotalMilliseconds,
                                            cancel, "`connected` frame").ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                Cut(c, "no `connected` frame in time");
                throw;
            }
            catch (OperationCanceledException)
            {
                Cut(c, "connect cancelled");
                throw;
            }
        }

        private Uri BuildUri(long? lastSeq)
        {
            var baseUrl = options.GatewayUrl.TrimEnd('/');
            if (baseUrl.StartsWith("http", StringComparison.Ordinal))
                baseUrl = "ws" + baseUrl.Substring(4);
            var query = "experience=" + Uri.EscapeDataString(options.Experience);
            if (!options.TokenInHeader)
                query += "&token=" + Uri.EscapeDataString(options.Token);
            if (lastSeq.HasValue)
                query += "&last_seq=" + lastSeq.Value;
            return new Uri(baseUrl + "/ws/experience?" + query);
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

        /// <summary>The dead-link detector: a ping after PingInterval of silence, the socket cut after PongTimeout of it.</summary>
        private async Task Heartbeat(Connection c)
        {
            var interval = (long)options.PingInterval.TotalMilliseconds;
            var deadline = (long)options.PongTimeout.TotalMilliseconds;
            var tick = TimeSpan.FromMilliseconds(Math.Max(20, Math.Min(interval, deadline) / 4));
            while (current == c && !stopped)
            {
                await Task.Delay(tick).ConfigureAwait(false);
                if (current != c || !c.Transport.IsOpen)
                    return;
                var silent = Waiters.Now - Interlocked.Read(ref c.LastHeardTicks);
                if (silent >= deadline)
                {
                    Cut(c, "no frame (not even a pong) for " + TimeSpan.FromMilliseconds(silent));
                    return;
                }
                if (silent >= interval && c.Established && Waiters.Now - Interlocked.Read(ref c.LastPingTicks) >= interval)
                {
                    Interlocked.Exchange(ref c.LastPingTicks, Waiters.Now);
                    var ping = new JObject { { "type", "ping" }, { "timestamp", 0 } };
                    var sent = Send(c, ping, CancellationToken.None).ContinueWith(t => { var ignored = t.Exception; });
                    GC.KeepAlive(sent);
                }
            }
        }

        /// <summary>Cut a connection the client gave up on (a dead link): its close is handled as a drop (1006).</summary>
        private void Cut(Connection c, string why)
        {
            c.CutReason = why;
            c.Transport.Abort();
        }

        private async Task ReadLoop(Connection c)
        {
            try
            {
                while (true)
                {
                    var text = await c.Transport.ReceiveTextAsync(CancellationToken.None).ConfigureAwait(false);
                    if (text == null)
                        break;
                    Interlocked.Exchange(ref c.LastHeardTicks, Waiters.Now);
                    OnText(c, text);
                }
            }
            catch (Exception)
            {
                // A lost network surfaces as WebSocketException, an Abort() as OperationCanceledException
                // or ObjectDisposedException depending on the runtime: all of them are a drop (1006).
            }
            var code = c.CutReason == null ? c.Transport.CloseCode ?? CloseCodes.Abnormal : CloseCodes.Abnormal;
            OnClosed(c, code, c.CutReason ?? c.Transport.CloseReason);
        }
    }
}
