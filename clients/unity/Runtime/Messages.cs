using System;
using Newtonsoft.Json.Linq;

namespace Gaia.Realtime
{
    /// <summary>WebSocket close codes of the gateway (docs/protocol.md), and what the client does on each.</summary>
    public static class CloseCodes
    {
        public const int Normal = 1000;
        public const int GoingAway = 1001;        // server shutting down: reconnect and resume
        public const int Abnormal = 1006;         // no close frame (network lost): reconnect and resume
        public const int ServerError = 1011;      // reconnect and resume
        public const int Unauthorized = 4401;     // stop; ask the game for a fresh token
        public const int Forbidden = 4403;        // stop; the experience is not allowed
        public const int SlowConsumer = 4408;     // reconnect and resume
        public const int TooLarge = 4413;         // a client bug: stop
        public const int TooManyMessages = 4429;  // reconnect after the backoff

        /// <summary>True when the client should reconnect (with last_seq) after this close.</summary>
        public static bool Reconnects(int code)
        {
            return code != Normal && code != Unauthorized && code != Forbidden && code != TooLarge;
        }
    }

    /// <summary>An `error` frame: bad input, a refused or failed request.</summary>
    public sealed class GaiaError
    {
        public string Code;
        public string Message;
        public string Id;

        public override string ToString()
        {
            return Code + ": " + Message;
        }
    }

    /// <summary>One player arriving, leaving or moving (a `presence` frame or one entry of a `presence_batch`).</summary>
    public sealed class PresenceChange
    {
        public string Event;   // "join", "leave" or "move"
        public string UserId;
        public string AreaId;
    }

    /// <summary>The `resumed` frame after a replay of what a dropped connection missed.</summary>
    public sealed class ResumeInfo
    {
        public long FromSeq;
        public long ToSeq;
        public int Replayed;
    }

    /// <summary>The socket closed; <see cref="WillReconnect"/> says whether the client resumes by itself.</summary>
    public sealed class CloseInfo
    {
        public int Code;
        public string Reason;
        public bool WillReconnect;
        public TimeSpan RetryIn;
    }

    /// <summary>The gateway refused the token (4401): the game must get a new one and call ConnectAsync.</summary>
    public sealed class GaiaAuthException : Exception
    {
        public GaiaAuthException(string message) : base(message) { }
    }

    /// <summary>The connection is not open and none is coming (or it closed while a request waited for its answer).</summary>
    public sealed class GaiaConnectionException : Exception
    {
        /// <summary>An exception with a message.</summary>
        public GaiaConnectionException(string message) : base(message) { }

        /// <summary>An exception wrapping the transport's own (a refused or failed handshake).</summary>
        public GaiaConnectionException(string message, Exception inner) : base(message, inner) { }
    }

    /// <summary>A `world_update` as the client handled it: the frame and what applying it did.</summary>
    public sealed class WorldUpdate
    {
        /// <summary>The frame as received (read it, never change it).</summary>
        public JObject Frame;
        /// <summary>Applied, or why not (a gap or a failure is repaired by a snapshot the client asks for).</summary>
        public DeltaResult Result;
        /// <summary>The stream sequence (the resume cursor).</summary>
        public long Seq;
        /// <summary>Who caused it (`world` for the world clock).</summary>
        public string ActorId;
    }

    /// <summary>One `chat_chunk`: a piece of a chat's narrative, raised after the world change it tells of was applied.</summary>
    public sealed class ChatChunk
    {
        /// <summary>The chat's id (as sent).</summary>
        public string Id;
        /// <summary>The conversation it belongs to.</summary>
        public string ConversationId;
        /// <summary>The text to append.</summary>
        public string Delta;
    }

    /// <summary>How a chat ended (`chat_done`, or an `error` answering it).</summary>
    public sealed class ChatResult
    {
        /// <summary>The chat's id.</summary>
        public string Id;
        /// <summary>The conversation (chosen by the gateway when none was given).</summary>
        public string ConversationId;
        /// <summary>The action the words became (null if none).</summary>
        public string Action;
        /// <summary>True if the action succeeded.</summary>
        public bool Success;
        /// <summary>Who wrote the story: `model`, `builtin` or `fallback`.</summary>
        public string Narrator;
        /// <summary>Why the fallback narrator wrote it (null otherwise).</summary>
        public string Reason;
        /// <summary>The whole narrative (every chunk's delta, in order).</summary>
        public string Text;
        /// <summary>Milliseconds to the first chunk, as the gateway measured.</summary>
        public double TimeToFirstChunkMs;
        /// <summary>Milliseconds for the whole chat, as the gateway measured.</summary>
        public double TotalTimeMs;
        /// <summary>The `error` that ended the chat instead of `chat_done` (null otherwise).</summary>
        public GaiaError Error;
    }
}
