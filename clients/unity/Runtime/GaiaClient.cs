using System;
using System.Collections.Concurrent;
using System.IO;
using System.Net.WebSockets;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using Newtonsoft.Json;
using Newtonsoft.Json.Linq;

namespace Gaia.Realtime
{
    /// <summary>
    /// One player's session with the gateway (docs/protocol.md). Frames are read on a background
    /// task and handled on the dispatcher's thread, in order: the local world, the roster and every
    /// event handler change only there. A dropped socket is resumed with last_seq after a jittered,
    /// growing delay; 4401 stops and raises <see cref="AuthRequired"/>.
    /// </summary>
    public sealed class GaiaClient : IDisposable
    {
        private readonly GaiaClientOptions options;
        private readonly Backoff backoff;
        private readonly SemaphoreSlim sendLock = new SemaphoreSlim(1, 1);
        private readonly ConcurrentDictionary<string, TaskCompletionSource<JObject>> answers =
            new ConcurrentDictionary<string, TaskCompletionSource<JObject>>();
        private readonly ConcurrentDictionary<long, TaskCompletionSource<JObject>> pings =
            new ConcurrentDictionary<long, TaskCompletionSource<JObject>>();
        private ClientWebSocket socket;
        private TaskCompletionSource<JObject> connecting;
        private TaskCompletionSource<JObject> snapshotWaiter;
        private long receivedSeq = -1;   // the resume cursor, as read off the wire
        private long handledSeq = -1;    // the last seq handled on the dispatcher thread
        private int nextId;
        private bool stopped;
        private bool askedForState;

        public GaiaClient(GaiaClientOptions options)
        {
            this.options = options;
            backoff = new Backoff(options.InitialBackoff, options.MaxBackoff);
            World = new LocalWorld();
        }

        public LocalWorld World { get; private set; }
        public string UserId { get; private set; }
        public string ConnectionId { get; private set; }
        public IDispatcher Dispatcher { get { return options.Dispatcher; } }

        /// <summary>The resume cursor: the last stream sequence received (null before the first).</summary>
        public long? LastSeq
        {
            get { var seq = Interlocked.Read(ref receivedSeq); return seq < 0 ? (long?)null : seq; }
        }

        public bool IsOpen
        {
            get { var ws = socket; return ws != null && ws.State == WebSocketState.Open; }
        }

        public event Action<JObject> Connected;
        public event Action<LocalWorld> SnapshotApplied;
        public event Action<JObject> WorldUpdated;
        public event Action<PresenceChange> PresenceChanged;
        public event Action<ResumeInfo> Resumed;
        public event Action<string> ResyncRequired;
        public event Action<GaiaError> ErrorReceived;
        public event Action<CloseInfo> Closed;
        public event Action<int> AuthRequired;

        /// <summary>Open the socket (resuming after <see cref="LastSeq"/> if there is one) and wait for `connected`.</summary>
        public async Task<JObject> ConnectAsync(CancellationToken cancel = default(CancellationToken))
        {
            stopped = false;
            var ws = new ClientWebSocket();
            if (options.TokenInHeader)
                ws.Options.SetRequestHeader("Authorization", "Bearer " + options.Token);
            connecting = new TaskCompletionSource<JObject>();
            socket = ws;
            await ws.ConnectAsync(BuildUri(LastSeq), cancel).ConfigureAwait(false);
            var reader = Task.Run(() => ReadLoop(ws));  // ends when the socket does; OnClosed takes it from there
            GC.KeepAlive(reader);
            var first = await Task.WhenAny(connecting.Task, Task.Delay(options.RequestTimeout, cancel)).ConfigureAwait(false);
            if (first != connecting.Task)
                throw new TimeoutException("no `connected` frame within " + options.RequestTimeout);
            return await connecting.Task.ConfigureAwait(false);
        }

        /// <summary>Send an action and return its `action_response` (or the `error` answering it).</summary>
        public Task<JObject> ActAsync(string action, object args = null)
        {
            var frame = args == null ? new JObject() : JObject.FromObject(args);
            frame["type"] = "action";
            frame["action"] = action;
            return RequestAsync(frame);
        }

        /// <summary>Ask for a fresh snapshot; completes when it has been applied.</summary>
        public async Task<LocalWorld> GetStateAsync()
        {
            var waiter = snapshotWaiter = new TaskCompletionSource<JObject>();
            await SendAsync(new JObject { { "type", "get_state" } }).ConfigureAwait(false);
            await WithTimeout(waiter.Task, "area_of_interest").ConfigureAwait(false);
            return World;
        }

        /// <summary>Round-trip time to the gateway in milliseconds.</summary>
        public async Task<double> PingAsync()
        {
            var sent = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() * 1000 + Interlocked.Increment(ref nextId) % 1000;
            var waiter = new TaskCompletionSource<JObject>();
            pings[sent] = waiter;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            await SendAsync(new JObject { { "type", "ping" }, { "timestamp", sent } }).ConfigureAwait(false);
            await WithTimeout(waiter.Task, "pong").ConfigureAwait(false);
            return clock.Elapsed.TotalMilliseconds;
        }

        /// <summary>Close cleanly (1000): the other players see this player leave at once; no reconnect.</summary>
        public async Task CloseAsync()
        {
            stopped = true;
            var ws = socket;
            if (ws == null || ws.State != WebSocketState.Open)
                return;
            try
            {
                await ws.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", CancellationToken.None).ConfigureAwait(false);
            }
            catch (WebSocketException) { }
        }

        /// <summary>Cut the connection without a close frame, as a lost network would; auto-reconnect resumes it.</summary>
        public void Abort()
        {
            var ws = socket;
            if (ws != null)
                ws.Abort();
        }

        public void Dispose()
        {
            stopped = true;
            Abort();
        }

        private Uri BuildUri(long? lastSeq)
        {
            var baseUrl = options.GatewayUrl.TrimEnd('/');
            if (baseUrl.StartsWith("http"))
                baseUrl = "ws" + baseUrl.Substring(4);
            var query = "experience=" + Uri.EscapeDataString(options.Experience);
            if (!options.TokenInHeader)
                query += "&token=" + Uri.EscapeDataString(options.Token);
            if (lastSeq.HasValue)
                query += "&last_seq=" + lastSeq.Value;
            return new Uri(baseUrl + "/ws/experience?" + query);
        }

        private async Task<JObject> RequestAsync(JObject frame)
        {
            var id = "u" + Interlocked.Increment(ref nextId);
            frame["id"] = id;
            var waiter = new TaskCompletionSource<JObject>();
            answers[id] = waiter;
            try
            {
                await SendAsync(frame).ConfigureAwait(false);
                return await WithTimeout(waiter.Task, (string)frame["type"]).ConfigureAwait(false);
            }
            finally
            {
                TaskCompletionSource<JObject> ignored;
                answers.TryRemove(id, out ignored);
            }
        }

        private async Task<T> WithTimeout<T>(Task<T> task, string what)
        {
            if (await Task.WhenAny(task, Task.Delay(options.RequestTimeout)).ConfigureAwait(false) != task)
                throw new TimeoutException("no answer to " + what + " within " + options.RequestTimeout);
            return await task.ConfigureAwait(false);
        }

        private async Task SendAsync(JObject frame)
        {
            var ws = socket;
            if (ws == null || ws.State != WebSocketState.Open)
                throw new GaiaConnectionException("not connected");
            var bytes = Encoding.UTF8.GetBytes(frame.ToString(Formatting.None));
            await sendLock.WaitAsync().ConfigureAwait(false);
            try
            {
                await ws.SendAsync(new ArraySegment<byte>(bytes), WebSocketMessageType.Text, true, CancellationToken.None)
                    .ConfigureAwait(false);
            }
            finally
            {
                sendLock.Release();
            }
        }

        private async Task ReadLoop(ClientWebSocket ws)
        {
            var buffer = new byte[16 * 1024];
            try
            {
                while (ws.State == WebSocketState.Open)
                {
                    var text = await ReceiveText(ws, buffer).ConfigureAwait(false);
                    if (text == null)
                        break;
                    OnText(text);
                }
            }
            catch (Exception)
            {
                // A lost network surfaces as WebSocketException, an Abort() as OperationCanceledException
                // or ObjectDisposedException depending on the runtime: all of them are a drop (1006).
            }
            var code = ws.CloseStatus.HasValue ? (int)ws.CloseStatus.Value : CloseCodes.Abnormal;
            var reason = ws.CloseStatusDescription ?? "";
            if (ws.State == WebSocketState.CloseReceived)
            {
                try { await ws.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, "", CancellationToken.None).ConfigureAwait(false); }
                catch (WebSocketException) { }
            }
            OnClosed(ws, code, reason);
        }

        private static async Task<string> ReceiveText(ClientWebSocket ws, byte[] buffer)
        {
            using (var message = new MemoryStream())
            {
                while (true)
                {
                    var got = await ws.ReceiveAsync(new ArraySegment<byte>(buffer), CancellationToken.None).ConfigureAwait(false);
                    if (got.MessageType == WebSocketMessageType.Close)
                        return null;
                    message.Write(buffer, 0, got.Count);
                    if (got.EndOfMessage)
                        return Encoding.UTF8.GetString(message.GetBuffer(), 0, (int)message.Length);
                }
            }
        }

        /// <summary>On the socket thread: answer waiters and note the cursor; the rest goes to the dispatcher.</summary>
        private void OnText(string text)
        {
            JObject frame;
            try
            {
                frame = JObject.Parse(text);
            }
            catch (JsonException)
            {
                return;  // not JSON: nothing the protocol sends; skip it rather than drop the session
            }
            var type = (string)frame["type"];
            var seq = frame["seq"];
            if (seq != null)
                Interlocked.Exchange(ref receivedSeq, Math.Max(Interlocked.Read(ref receivedSeq), (long)seq));
            if (type == "connected")
            {
                UserId = (string)frame["user_id"];
                ConnectionId = (string)frame["connection_id"];
                backoff.Reset();
            }
            options.Dispatcher.Post(() => Handle(type, frame));
        }

        /// <summary>On the dispatcher thread, in arrival order.</summary>
        private void Handle(string type, JObject frame)
        {
            var seq = frame["seq"];
            if (seq != null)
            {
                if ((long)seq <= handledSeq)
                    return;  // already handled before a resume that started from an older cursor
                handledSeq = (long)seq;
            }
            switch (type)
            {
                case "connected":
                    Raise(Connected, frame);
                    connecting.TrySetResult(frame);
                    break;
                case "area_of_interest":
                    World.ApplySnapshot(frame);
                    askedForState = false;
                    Raise(SnapshotApplied, World);
                    var waiter = snapshotWaiter;
                    if (waiter != null)
                        waiter.TrySetResult(frame);
                    break;
                case "world_update":
                    OnWorldUpdate(frame);
                    break;
                case "presence":
                    OnPresence(ToPresence(frame));
                    break;
                case "presence_batch":
                    foreach (JObject change in (JArray)frame["changes"])
                        if ((string)change["user_id"] != UserId)
                            OnPresence(ToPresence(change));
                    break;
                case "resumed":
                    Raise(Resumed, new ResumeInfo { FromSeq = (long)frame["from_seq"], ToSeq = (long)frame["to_seq"],
                                                    Replayed = (int)frame["replayed"] });
                    break;
                case "resync_required":
                    Raise(ResyncRequired, (string)frame["reason"]);
                    break;
                case "pong":
                    TaskCompletionSource<JObject> pong;
                    if (pings.TryRemove((long)frame["timestamp"], out pong))
                        pong.TrySetResult(frame);
                    break;
                case "action_response":
                case "error":
                    OnAnswer(type, frame);
                    break;
            }
        }

        private void OnWorldUpdate(JObject frame)
        {
            var result = World.ApplyUpdate(frame);
            if (result == DeltaResult.Gap && !askedForState)
            {
                askedForState = true;  // one get_state per hole: its snapshot replaces the broken chain
                SendAsync(new JObject { { "type", "get_state" } }).ContinueWith(t => { var e = t.Exception; });
            }
            World.TrackSelf(UserId);
            Raise(WorldUpdated, frame);
        }

        private void OnPresence(PresenceChange change)
        {
            World.ApplyPresence(change);
            Raise(PresenceChanged, change);
        }

        private void OnAnswer(string type, JObject frame)
        {
            var id = (string)frame["id"];
            TaskCompletionSource<JObject> waiter;
            if (id != null && answers.TryRemove(id, out waiter))
                waiter.TrySetResult(frame);
            if (type == "error")
                Raise(ErrorReceived, new GaiaError { Code = (string)frame["code"], Message = (string)frame["message"], Id = id });
        }

        private static PresenceChange ToPresence(JObject frame)
        {
            return new PresenceChange { Event = (string)frame["event"], UserId = (string)frame["user_id"],
                                        AreaId = (string)frame["area_id"] };
        }

        private void OnClosed(ClientWebSocket ws, int code, string reason)
        {
            if (socket != ws)
                return;
            FailWaiters("connection closed (" + code + ")");
            var reconnect = options.AutoReconnect && !stopped && CloseCodes.Reconnects(code);
            var delay = reconnect ? backoff.Next() : TimeSpan.Zero;
            var info = new CloseInfo { Code = code, Reason = reason, WillReconnect = reconnect, RetryIn = delay };
            options.Dispatcher.Post(() => Raise(Closed, info));
            if (code == CloseCodes.Unauthorized)
            {
                connecting.TrySetException(new GaiaAuthException("the gateway refused the token (4401): " + reason));
                options.Dispatcher.Post(() => Raise(AuthRequired, code));
            }
            else
            {
                connecting.TrySetException(new GaiaConnectionException("closed before `connected`: " + code));
            }
            if (reconnect)
                Task.Run(() => ReconnectAfter(delay));
        }

        private async Task ReconnectAfter(TimeSpan delay)
        {
            while (!stopped)
            {
                await Task.Delay(delay).ConfigureAwait(false);
                if (stopped)
                    return;
                try
                {
                    await ConnectAsync().ConfigureAwait(false);
                    return;
                }
                catch (GaiaAuthException)
                {
                    return;  // OnClosed raised AuthRequired
                }
                catch (Exception)
                {
                    if (IsOpen)
                        return;  // connected after all; its own close handling takes over from here
                    delay = backoff.Next();
                }
            }
        }

        private void FailWaiters(string why)
        {
            foreach (var id in answers.Keys)
            {
                TaskCompletionSource<JObject> waiter;
                if (answers.TryRemove(id, out waiter))
                    waiter.TrySetException(new GaiaConnectionException(why));
            }
        }

        private static void Raise<T>(Action<T> handler, T value)
        {
            if (handler != null)
                handler(value);
        }
    }
}
