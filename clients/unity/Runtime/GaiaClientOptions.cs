using System;

namespace Gaia.Realtime
{
    /// <summary>Where and as whom to connect, how to notice a dead link, and how to behave after a drop.</summary>
    /// <remarks>
    /// <see cref="GatewayUrl"/>, <see cref="Token"/>, <see cref="Experience"/> and <see cref="Dispatcher"/> are
    /// required: a null or empty one is an <see cref="ArgumentException"/> naming the option (its
    /// <see cref="ArgumentException.ParamName"/> is the option's name), thrown by the <see cref="GaiaClient"/>
    /// constructor and again by <see cref="GaiaClient.ConnectAsync"/> if the options changed since.
    /// </remarks>
    public sealed class GaiaClientOptions
    {
        /// <summary>http(s):// or ws(s):// base URL of the gateway (required).</summary>
        public string GatewayUrl = "http://127.0.0.1:8000";
        /// <summary>The player's JWT (required).</summary>
        public string Token;
        /// <summary>The experience to join (required).</summary>
        public string Experience = "wylding-woods";
        /// <summary>Send the token as `Authorization: Bearer` instead of `?token=`.</summary>
        public bool TokenInHeader;
        /// <summary>Where events and world changes run (a <see cref="QueueDispatcher"/> drained every frame; required).</summary>
        public IDispatcher Dispatcher = new QueueDispatcher();
        /// <summary>Makes one socket per connection; null means <see cref="ClientWebSocketTransport"/> (replace it for WebGL).</summary>
        public Func<IWebSocketTransport> Transport;
        /// <summary>Resume with last_seq after a drop, 1001, 1011, 4408 or 4429.</summary>
        public bool AutoReconnect = true;
        /// <summary>The first reconnect delay (doubles per failed attempt, with jitter).</summary>
        public TimeSpan InitialBackoff = TimeSpan.FromMilliseconds(500);
        /// <summary>The longest reconnect delay.</summary>
        public TimeSpan MaxBackoff = TimeSpan.FromSeconds(15);
        /// <summary>
        /// The deadline of one handshake, the first <see cref="GaiaClient.ConnectAsync"/> and every reconnect
        /// attempt alike: the TCP connect, the WebSocket upgrade and the gateway's `connected` frame, all
        /// within this time. At the deadline the attempt is given up: ConnectAsync throws a
        /// <see cref="GaiaConnectionException"/> (its InnerException a <see cref="TimeoutException"/>); a
        /// reconnect tries again after the next backoff.
        /// </summary>
        public TimeSpan ConnectTimeout = TimeSpan.FromSeconds(10);
        /// <summary>How long a request (action, get_state, ping) waits for its answer, a wait for a reconnect included.</summary>
        public TimeSpan RequestTimeout = TimeSpan.FromSeconds(10);
        /// <summary>How long a chat waits for its `chat_done`.</summary>
        public TimeSpan ChatTimeout = TimeSpan.FromSeconds(60);
        /// <summary>After this long without a frame from the gateway the client sends a `ping`.</summary>
        public TimeSpan PingInterval = TimeSpan.FromSeconds(3);
        /// <summary>After this long without any frame (pongs included) the link is dead: the socket is cut and resumed.</summary>
        public TimeSpan PongTimeout = TimeSpan.FromSeconds(10);

        /// <summary>Throw an <see cref="ArgumentException"/> naming the first option a client cannot work with.</summary>
        internal void Check()
        {
            if (string.IsNullOrWhiteSpace(GatewayUrl))
                throw Bad("GatewayUrl", "is null or empty: give the gateway's base URL, e.g. https://gateway.example");
            Uri url;
            if (!Uri.TryCreate(GatewayUrl.Trim(), UriKind.Absolute, out url) ||
                Array.IndexOf(new[] { "http", "https", "ws", "wss" }, url.Scheme) < 0)
                throw Bad("GatewayUrl", "is \"" + GatewayUrl + "\": it must be an absolute http://, https://, ws:// or wss:// URL");
            if (string.IsNullOrWhiteSpace(Token))
                throw Bad("Token", "is null or empty: give the player's JWT (from your backend; `make token` in development)");
            if (string.IsNullOrWhiteSpace(Experience))
                throw Bad("Experience", "is null or empty: give the experience to join, e.g. wylding-woods");
            if (Dispatcher == null)
                throw Bad("Dispatcher", "is null: give a QueueDispatcher and Drain() it every frame");
            if (ConnectTimeout <= TimeSpan.Zero)
                throw Bad("ConnectTimeout", "is " + ConnectTimeout + ": it must be positive");
        }

        private static ArgumentException Bad(string option, string what)
        {
            return new ArgumentException("GaiaClientOptions." + option + " " + what, option);
        }
    }
}
