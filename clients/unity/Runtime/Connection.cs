using System.Threading.Tasks;
using Newtonsoft.Json.Linq;

namespace Gaia.Realtime
{
    /// <summary>One socket's life: its transport, its `connected` frame, and why the client cut it (if it did).</summary>
    internal sealed class Connection
    {
        internal readonly IWebSocketTransport Transport;
        internal readonly TaskCompletionSource<JObject> Hello =
            new TaskCompletionSource<JObject>(TaskCreationOptions.RunContinuationsAsynchronously);
        internal readonly TaskCompletionSource<bool> Gone = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        internal volatile bool Established;
        internal volatile string CutReason;
        internal long LastHeardTicks;
        internal long LastPingTicks;

        internal Connection(IWebSocketTransport transport)
        {
            Transport = transport;
        }
    }
}
