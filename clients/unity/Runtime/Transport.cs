using System;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;

namespace Gaia.Realtime
{
    /// <summary>
    /// The one seam between the client and a WebSocket implementation: text frames in and out, a
    /// close with a code, and an abort. <see cref="ClientWebSocketTransport"/> is the default; a
    /// WebGL build plugs a browser WebSocket bridge here (<see cref="GaiaClientOptions.Transport"/>)
    /// and keeps resume, backoff, the heartbeat and the local world as they are.
    /// </summary>
    public interface IWebSocketTransport : IDisposable
    {
        /// <summary>Open the socket; <paramref name="headers"/> may be ignored where headers cannot be set (the token is then in the query).</summary>
        Task ConnectAsync(Uri uri, IDictionary<string, string> headers, CancellationToken cancel);

        /// <summary>Send one complete text frame. Callers never overlap sends.</summary>
        Task SendTextAsync(string text, CancellationToken cancel);

        /// <summary>The next complete text frame, or null once the socket is closed (by either side).</summary>
        Task<string> ReceiveTextAsync(CancellationToken cancel);

        /// <summary>Start a clean close (send the close frame); does not wait for the peer's answer.</summary>
        Task CloseAsync(int code, string reason, CancellationToken cancel);

        /// <summary>Cut the socket at once without a close frame; a pending receive ends (null or an exception).</summary>
        void Abort();

        /// <summary>True while frames can be sent.</summary>
        bool IsOpen { get; }

        /// <summary>The close code the peer sent, or null (no close frame: a drop).</summary>
        int? CloseCode { get; }

        /// <summary>The reason the peer sent with its close code ("" if none).</summary>
        string CloseReason { get; }
    }
}
