using System;
using System.Collections.Generic;
using System.IO;
using System.Net.WebSockets;
using System.Text;
using System.Threading;
using System.Threading.Tasks;

namespace Gaia.Realtime
{
    /// <summary>The default transport: System.Net.WebSockets.ClientWebSocket (Editor, desktop, Android, iOS; not WebGL).</summary>
    public sealed class ClientWebSocketTransport : IWebSocketTransport
    {
        private readonly ClientWebSocket socket = new ClientWebSocket();
        private readonly byte[] buffer = new byte[16 * 1024];

        /// <inheritdoc />
        public async Task ConnectAsync(Uri uri, IDictionary<string, string> headers, CancellationToken cancel)
        {
            foreach (var header in headers)
                socket.Options.SetRequestHeader(header.Key, header.Value);
            await socket.ConnectAsync(uri, cancel).ConfigureAwait(false);
        }

        /// <inheritdoc />
        public Task SendTextAsync(string text, CancellationToken cancel)
        {
            var bytes = Encoding.UTF8.GetBytes(text);
            return socket.SendAsync(new ArraySegment<byte>(bytes), WebSocketMessageType.Text, true, cancel);
        }

        /// <inheritdoc />
        public async Task<string> ReceiveTextAsync(CancellationToken cancel)
        {
            using (var message = new MemoryStream())
            {
                while (true)
                {
                    var got = await socket.ReceiveAsync(new ArraySegment<byte>(buffer), cancel).ConfigureAwait(false);
                    if (got.MessageType == WebSocketMessageType.Close)
                    {
                        await AnswerClose().ConfigureAwait(false);
                        return null;
                    }
                    message.Write(buffer, 0, got.Count);
                    if (got.EndOfMessage)
                        return Encoding.UTF8.GetString(message.GetBuffer(), 0, (int)message.Length);
                }
            }
        }

        /// <inheritdoc />
        public async Task CloseAsync(int code, string reason, CancellationToken cancel)
        {
            if (socket.State == WebSocketState.Open)
                await socket.CloseOutputAsync((WebSocketCloseStatus)code, reason, cancel).ConfigureAwait(false);
        }

        /// <inheritdoc />
        public void Abort()
        {
            socket.Abort();
        }

        /// <inheritdoc />
        public bool IsOpen
        {
            get { return socket.State == WebSocketState.Open; }
        }

        /// <inheritdoc />
        public int? CloseCode
        {
            get { return socket.CloseStatus.HasValue ? (int?)(int)socket.CloseStatus.Value : null; }
        }

        /// <inheritdoc />
        public string CloseReason
        {
            get { return socket.CloseStatusDescription ?? ""; }
        }

        /// <inheritdoc />
        public void Dispose()
        {
            socket.Dispose();
        }

        private async Task AnswerClose()
        {
            if (socket.State != WebSocketState.CloseReceived)
                return;
            try
            {
                await socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, "", CancellationToken.None).ConfigureAwait(false);
            }
            catch (WebSocketException) { }
            catch (ObjectDisposedException) { }
        }
    }
}
