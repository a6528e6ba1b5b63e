using System;

namespace Gaia.Realtime
{
    /// <summary>Where and as whom to connect, and how to behave after a drop.</summary>
    public sealed class GaiaClientOptions
    {
        public string GatewayUrl = "http://127.0.0.1:8000";   // http(s):// or ws(s)://
        public string Token;
        public string Experience = "wylding-woods";
        public bool TokenInHeader;                             // Authorization: Bearer instead of ?token=
        public IDispatcher Dispatcher = new QueueDispatcher();
        public bool AutoReconnect = true;
        public TimeSpan InitialBackoff = TimeSpan.FromMilliseconds(500);
        public TimeSpan MaxBackoff = TimeSpan.FromSeconds(15);
        public TimeSpan RequestTimeout = TimeSpan.FromSeconds(10);
    }
}
