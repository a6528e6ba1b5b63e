using System;
using System.Collections.Concurrent;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using Newtonsoft.Json.Linq;

namespace Gaia.Realtime
{
    /// <summary>
    /// Chats: a `chat` sent, its end (`chat_done` or an `error`) noticed on the socket thread so its
    /// timeout stops, its chunks and its result delivered on the dispatcher's thread, in order.
    /// </summary>
    public sealed partial class GaiaClient
    {
        private readonly ConcurrentDictionary<string, ChatCall> chats = new ConcurrentDictionary<string, ChatCall>();

        /// <summary><see cref="ChatAsync"/>: completes once the dispatcher has raised every chunk and handled `chat_done`.</summary>
        private async Task<ChatResult> ChatCore(string message, string conversationId, Action<string> onDelta,
                                                CancellationToken cancel)
        {
            var deadline = Waiters.Now + (long)options.ChatTimeout.TotalMilliseconds;
            var id = "c" + Interlocked.Increment(ref nextId);
            var frame = new JObject { { "type", "chat" }, { "id", id }, { "message", message } };
            if (conversationId != null)
                frame["conversation_id"] = conversationId;
            var call = new ChatCall(id, onDelta);
            try
            {
                await SendWhenOpen(frame, deadline, cancel, () => chats[id] = call).ConfigureAwait(false);
                await Waiters.Within(call.Received.Task, deadline, cancel, "chat_done").ConfigureAwait(false);
                return await Waiters.Cancellable(call.Done.Task, cancel).ConfigureAwait(false);
            }
            finally
            {
                ChatCall ignored;
                chats.TryRemove(id, out ignored);
            }
        }

        /// <summary>On the socket thread: the chat's end arrived (its timeout stops; the result follows on the dispatcher).</summary>
        private void ChatEnded(string id, JObject frame)
        {
            ChatCall call;
            if (id != null && chats.TryGetValue(id, out call))
                call.Received.TrySetResult(frame);
        }

        /// <summary>On the dispatcher thread: the chunk added to its chat's text, then raised (onDelta, ChatChunkReceived).</summary>
        private void OnChatChunk(JObject frame)
        {
            var chunk = new ChatChunk { Id = frame["id"] == null ? null : frame["id"].ToString(),
                                        ConversationId = (string)frame["conversation_id"], Delta = (string)frame["delta"] };
            ChatCall call;
            if (chunk.Id != null && chats.TryGetValue(chunk.Id, out call))
            {
                call.Text.Append(chunk.Delta);
                if (call.OnDelta != null)
                    Raise(call.OnDelta, chunk.Delta);
            }
            Raise(ChatChunkReceived, chunk);
        }

        /// <summary>On the dispatcher thread, after the chat's chunks: its <see cref="ChatResult"/>.</summary>
        private void OnChatDone(JObject frame)
        {
            ChatCall call;
            var id = frame["id"] == null ? null : frame["id"].ToString();
            if (id == null || !chats.TryGetValue(id, out call))
                return;
            call.Done.TrySetResult(new ChatResult {
                Id = id, ConversationId = (string)frame["conversation_id"], Action = (string)frame["action"],
                Success = frame["success"] != null && (bool)frame["success"], Narrator = (string)frame["narrator"],
                Reason = (string)frame["reason"], Text = call.Text.ToString(),
                TimeToFirstChunkMs = frame["time_to_first_chunk_ms"] == null ? 0 : (double)frame["time_to_first_chunk_ms"],
                TotalTimeMs = frame["total_time_ms"] == null ? 0 : (double)frame["total_time_ms"] });
        }

        /// <summary>On the dispatcher thread: an `error` answering a chat ends it with <see cref="ChatResult.Error"/>.</summary>
        private void OnChatError(GaiaError error)
        {
            ChatCall call;
            if (error.Id != null && chats.TryGetValue(error.Id, out call))
                call.Done.TrySetResult(new ChatResult { Id = error.Id, Success = false, Text = call.Text.ToString(), Error = error });
        }

        /// <summary>The connection ended: every chat waiting on it fails (its result is cancelled).</summary>
        private void FailChats(string why)
        {
            foreach (var call in chats.Values)
                if (call.Received.TrySetException(new GaiaConnectionException(why + " during the chat")))
                    call.Done.TrySetCanceled();
        }

        /// <summary>A chat in flight: its end received on the socket thread, its chunks and result on the dispatcher's.</summary>
        private sealed class ChatCall
        {
            internal readonly TaskCompletionSource<JObject> Received = Waiters.Source<JObject>();
            internal readonly TaskCompletionSource<ChatResult> Done = Waiters.Source<ChatResult>();
            internal readonly StringBuilder Text = new StringBuilder();
            internal readonly string Id;
            internal readonly Action<string> OnDelta;

            internal ChatCall(string id, Action<string> onDelta)
            {
                Id = id;
                OnDelta = onDelta;
            }
        }
    }
}
