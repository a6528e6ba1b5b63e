using System;

namespace Gaia.Realtime
{
    /// <summary>Where and as whom to connect, how to notice a dead link, and how to behave after a drop.</summary>
    public sealed class GaiaClientOptions
    {
        /// <summary>http(s):// or ws(s):// base URL of the gateway.</summary>
        public string GatewayUrl = "http://127.0.0.1:8000";
        /// <summary>The player's JWT.</summary>
        public string Token;
        /// <summary>The experience to join.</summary>
        public string Experience = "wylding-woods";
        /// <summary>Send the token as `Authorization: Bearer` instead of `?token=`.</summary>
        public bool TokenInHeader;
        /// <summary>Where events and world changes run (a <see cref="QueueDispatcher"/> drained every frame).</summary>
        public IDispatcher Dispatcher = new QueueDispatcher();
        /// <summary>Makes one socket per connection; null means <see cref="ClientWebSocketTransport"/> (replace it for WebGL).</summary>
        public Func<IWebSocketTransport> Transport;
        /// <summary>Resume with last_seq after a drop, 1001, 1011, 4408 or 4429.</summary>
        public bool AutoReconnect = true;
        /// <summary>The first reconnect delay (doubles per failed attempt, with jitter).</summary>
        public TimeSpan InitialBackoff = TimeSpan.FromMilliseconds(500);
        /// <summary>The longest reconnect delay.</summary>
        public TimeSpan MaxBackoff = TimeSpan.FromSeconds(15);
        /// <summary>How long a request (action, get_state, ping, connect) waits for its answer, a wait for a reconnect included.</summary>
        public TimeSpan RequestTimeout = TimeSpan.FromSeconds(10);
        /// <summary>How long a chat waits for its `chat_done`.</summary>
        public TimeSpan ChatTimeout = TimeSpan.FromSeconds(60);
        /// <summary>After this long without a frame from the gateway the client sends a `ping`.</summary>
        public TimeSpan PingInterval = TimeSpan.FromSeconds(3);
        /// <summary>After this long without any frame (pongs included) the link is dead: the socket is cut and resumed.</summary>
        public TimeSpan PongTimeout = TimeSpan.FromSeconds(10);
    }
}
