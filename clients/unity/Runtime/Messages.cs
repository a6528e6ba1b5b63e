using System;

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

    /// <summary>The connection is not open (or closed while a request waited for its answer).</summary>
    public sealed class GaiaConnectionException : Exception
    {
        public GaiaConnectionException(string message) : base(message) { }
    }
}
