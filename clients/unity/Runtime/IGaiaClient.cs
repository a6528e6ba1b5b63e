using System;
using System.Threading;
using System.Threading.Tasks;
using Newtonsoft.Json.Linq;

namespace Gaia.Realtime
{
    /// <summary>
    /// What a game uses of a player's session with the gateway: <see cref="GaiaClient"/> implements
    /// it. Type your game code against this interface and a test of the game can hand it a fake
    /// (events raised by hand, a <see cref="LocalWorld"/> filled with <see cref="LocalWorld.ApplySnapshot"/>)
    /// instead of a connected client. Events are raised on <see cref="Dispatcher"/>'s thread.
    /// <see cref="IDisposable.Dispose"/> stops for good: a clean close (1000, so the others see a
    /// leave, not a drop), sent without blocking.
    /// </summary>
    public interface IGaiaClient : IDisposable
    {
        /// <summary>The player's world, kept current on the dispatcher's thread.</summary>
        LocalWorld World { get; }

        /// <summary>The user id the gateway knows this player by (from `connected`).</summary>
        string UserId { get; }

        /// <summary>The current connection's id (from `connected`).</summary>
        string ConnectionId { get; }

        /// <summary>Where events run.</summary>
        IDispatcher Dispatcher { get; }

        /// <summary>The resume cursor: the last stream sequence received (null before the first).</summary>
        long? LastSeq { get; }

        /// <summary>True while a session is established (`connected` received) and its socket open.</summary>
        bool IsOpen { get; }

        /// <summary>`connected` was handled (every connection, resumes included).</summary>
        event Action<JObject> Connected;

        /// <summary>A snapshot replaced the local world.</summary>
        event Action<LocalWorld> SnapshotApplied;

        /// <summary>A `world_update` was handled; <see cref="WorldUpdate.Result"/> says whether it was applied.</summary>
        event Action<WorldUpdate> WorldUpdated;

        /// <summary>Another player joined, left or moved (one per entry of a `presence_batch`).</summary>
        event Action<PresenceChange> PresenceChanged;

        /// <summary>A resume replayed what a dropped connection missed.</summary>
        event Action<ResumeInfo> Resumed;

        /// <summary>The cursor was too old; a fresh snapshot follows.</summary>
        event Action<string> ResyncRequired;

        /// <summary>An `error` frame (also returned to the request it answers).</summary>
        event Action<GaiaError> ErrorReceived;

        /// <summary>The socket closed; says whether the client resumes by itself.</summary>
        event Action<CloseInfo> Closed;

        /// <summary>The gateway refused the token (4401): get a fresh one and build a new client.</summary>
        event Action<int> AuthRequired;

        /// <summary>A piece of a chat's narrative (after the world change it tells of was applied).</summary>
        event Action<ChatChunk> ChatChunkReceived;

        /// <summary>A game handler of one of these events threw; the client went on (log it here).</summary>
        event Action<Exception> HandlerFailed;

        /// <summary>
        /// Open the socket (resuming after <see cref="LastSeq"/> if there is one) and wait for `connected`,
        /// the whole handshake within <see cref="GaiaClientOptions.ConnectTimeout"/>. On a client that is
        /// already connected it opens nothing: it checks the link with a ping and returns the current
        /// `connected` frame, or, if no pong comes within PongTimeout, cuts the dead socket and resumes on
        /// a new one. Throws <see cref="GaiaAuthException"/> on 4401, <see cref="GaiaConnectionException"/>
        /// when the gateway cannot be reached or the handshake missed its deadline (InnerException a
        /// <see cref="TimeoutException"/>), and <see cref="ArgumentException"/> naming an option that is null or empty.
        /// </summary>
        Task<JObject> ConnectAsync(CancellationToken cancel = default(CancellationToken));

        /// <summary>Send an action and return its `action_response` (or the `error` answering it), waiting for a reconnect if one is under way.</summary>
        Task<JObject> ActAsync(string action, object args = null, CancellationToken cancel = default(CancellationToken));

        /// <summary>
        /// Say something in the player's own words: the gateway turns it into an action, the world
        /// change is applied, then the narrative streams as <see cref="ChatChunkReceived"/> (and
        /// <paramref name="onDelta"/>) on the dispatcher's thread; completes with `chat_done`.
        /// </summary>
        Task<ChatResult> ChatAsync(string message, string conversationId = null, Action<string> onDelta = null,
                                   CancellationToken cancel = default(CancellationToken));

        /// <summary>Ask for a fresh snapshot; completes once the dispatcher has applied it (its timeout stops when it arrives).</summary>
        Task<LocalWorld> GetStateAsync(CancellationToken cancel = default(CancellationToken));

        /// <summary>Round-trip time to the gateway in milliseconds (the pong is matched on the socket thread).</summary>
        Task<double> PingAsync(CancellationToken cancel = default(CancellationToken));

        /// <summary>Close cleanly (1000): the other players see this player leave at once; no reconnect.</summary>
        Task CloseAsync(CancellationToken cancel = default(CancellationToken));

        /// <summary>Cut the connection without a close frame, as a lost network would; auto-reconnect resumes it.</summary>
        void Abort();
    }
}
