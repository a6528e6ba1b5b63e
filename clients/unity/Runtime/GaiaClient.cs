using System;
using System.Threading;
using System.Threading.Tasks;
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
    /// <remarks>
    /// One partial class, one concern per file: this file is the public surface (<see cref="IGaiaClient"/>);
    /// GaiaClientConnection.cs opens, watches and resumes the socket; GaiaClientRequests.cs sends frames
    /// and matches their answers; GaiaClientDispatch.cs reads frames and routes them to waiters and, on
    /// the dispatcher's thread, to the world and the game's handlers; GaiaClientChat.cs streams chats.
    /// </remarks>
    public sealed partial class GaiaClient : IGaiaClient
    {
        private readonly GaiaClientOptions options;

        /// <summary>A client that connects nothing yet.</summary>
        /// <exception cref="ArgumentNullException"><paramref name="options"/> is null.</exception>
        /// <exception cref="ArgumentException">A required option (GatewayUrl, Token, Experience, Dispatcher) is null or
        /// empty, the URL is not http(s) or ws(s), or ConnectTimeout is not positive: the message and ParamName name it.</exception>
        public GaiaClient(GaiaClientOptions options)
        {
            if (options == null)
                throw new ArgumentNullException("options", "GaiaClientOptions is null: give the gateway's URL, the player's token and a dispatcher");
            options.Check();
            this.options = options;
            backoff = new Backoff(options.InitialBackoff, options.MaxBackoff);
            World = new LocalWorld();
            World.HandlerFailed = ReportHandlerFailure;
        }

        /// <inheritdoc />
        public LocalWorld World { get; private set; }
        /// <inheritdoc />
        public string UserId { get; private set; }
        /// <inheritdoc />
        public string ConnectionId { get; private set; }
        /// <inheritdoc />
        public IDispatcher Dispatcher { get { return options.Dispatcher; } }

        /// <inheritdoc />
        public long? LastSeq
        {
            get { var seq = Interlocked.Read(ref receivedSeq); return seq < 0 ? (long?)null : seq; }
        }

        /// <inheritdoc />
        public bool IsOpen
        {
            get { var c = current; return c != null && c.Established && c.Transport.IsOpen; }
        }

        /// <inheritdoc />
        public event Action<JObject> Connected;
        /// <inheritdoc />
        public event Action<LocalWorld> SnapshotApplied;
        /// <inheritdoc />
        public event Action<WorldUpdate> WorldUpdated;
        /// <inheritdoc />
        public event Action<PresenceChange> PresenceChanged;
        /// <inheritdoc />
        public event Action<ResumeInfo> Resumed;
        /// <inheritdoc />
        public event Action<string> ResyncRequired;
        /// <inheritdoc />
        public event Action<GaiaError> ErrorReceived;
        /// <inheritdoc />
        public event Action<CloseInfo> Closed;
        /// <inheritdoc />
        public event Action<int> AuthRequired;
        /// <inheritdoc />
        public event Action<ChatChunk> ChatChunkReceived;
        /// <inheritdoc />
        public event Action<Exception> HandlerFailed;

        /// <inheritdoc />
        public async Task<JObject> ConnectAsync(CancellationToken cancel = default(CancellationToken))
        {
            options.Check();  // the options are fields a game may have changed since the constructor checked them
            stopped = false;
            return await ConnectCore(true, cancel).ConfigureAwait(false);
        }

        /// <inheritdoc />
        public Task<JObject> ActAsync(string action, object args = null, CancellationToken cancel = default(CancellationToken))
        {
            var frame = args == null ? new JObject() : JObject.FromObject(args);
            frame["type"] = "action";
            frame["action"] = action;
            return RequestAsync(frame, cancel);
        }

        /// <inheritdoc />
        public Task<ChatResult> ChatAsync(string message, string conversationId = null, Action<string> onDelta = null,
                                          CancellationToken cancel = default(CancellationToken))
        {
            return ChatCore(message, conversationId, onDelta, cancel);
        }

        /// <inheritdoc />
        public Task<LocalWorld> GetStateAsync(CancellationToken cancel = default(CancellationToken))
        {
            return GetStateCore(cancel);
        }

        /// <inheritdoc />
        public Task<double> PingAsync(CancellationToken cancel = default(CancellationToken))
        {
            return PingCore(cancel);
        }

        /// <inheritdoc />
        public Task CloseAsync(CancellationToken cancel = default(CancellationToken))
        {
            return CloseCore(cancel);
        }

        /// <inheritdoc />
        public void Abort()
        {
            AbortCurrent();
        }

        /// <summary>Stop for good: a clean close (1000, so the others see a leave, not a drop), sent without blocking.</summary>
        public void Dispose()
        {
            StopWithoutBlocking();
        }
    }
}
