using System;
using System.Collections.Generic;
using System.Linq;
using Gaia.Realtime;
using UnityEngine;

/// <summary>
/// Drop on an empty GameObject, paste a token (make token USER=you), press Play: the room, who is
/// here (players and NPCs), the weather and time of day, the items with a button each, the exits,
/// and the event log, drawn with IMGUI from the typed world (no JSON digging).
/// </summary>
public sealed class GaiaPlayer : MonoBehaviour
{
    public string gatewayUrl = "http://127.0.0.1:8000";
    public string experience = "wylding-woods";
    [TextArea] public string token = "";

    private readonly QueueDispatcher mainThread = new QueueDispatcher();
    private readonly List<string> log = new List<string>();
    private IGaiaClient client;  // the interface: a test of the game can hand it a fake
    private Vector2 scroll;
    private string chatLine = "";

    private async void Start()
    {
        client = new GaiaClient(new GaiaClientOptions {
            GatewayUrl = gatewayUrl, Experience = experience, Token = token.Trim(), Dispatcher = mainThread });
        client.WorldUpdated += u => Note("v" + u.Frame["snapshot_version"] + " " + u.ActorId + ": " + u.Result);
        client.ChatChunkReceived += chunk => Note("  " + chunk.Delta);
        client.HandlerFailed += Debug.LogException;  // a bug in a handler above: logged, the client goes on
        client.PresenceChanged += p => Note(p.UserId + " " + p.Event + " " + p.AreaId);
        client.Resumed += r => Note("resumed: " + r.Replayed + " missed events replayed");
        client.ResyncRequired += reason => Note("resync: " + reason);
        client.ErrorReceived += e => Note("error " + e);
        client.Closed += c => Note("closed " + c.Code + (c.WillReconnect ? ", reconnecting in " + c.RetryIn.TotalSeconds.ToString("0.0") + " s" : ""));
        client.AuthRequired += code => Note("the token was refused: paste a fresh one and press Play again");
        client.World.NpcMoved += m => Note(NpcName(m.NpcId) + " walks to " + AreaName(m.To));
        client.World.EnvironmentChanged += e => Note("the " + e.Key.Replace('_', ' ') + " turns " + e.Value);
        client.World.CurrentAreaChanged += m => Note("you are in " + AreaName(m.To));
        try
        {
            var hello = await client.ConnectAsync();
            Note("connected as " + hello["user_id"]);
        }
        catch (Exception e)
        {
            Note("could not connect: " + e.Message);
        }
    }

    private void Update()
    {
        mainThread.Drain();  // every client event and world change happens here, on Unity's main thread
    }

    private async void OnApplicationPause(bool paused)
    {
        if (paused || client == null)
            return;
        try
        {
            await client.ConnectAsync();  // back from the background: opens nothing if the link still answers a ping
        }
        catch (Exception e)
        {
            Note("could not reconnect: " + e.Message);
        }
    }

    private void OnDestroy()
    {
        if (client != null)
            client.Dispose();  // a clean close (1000): the others see this player leave at once
    }

    private void OnGUI()
    {
        var world = client == null ? null : client.World;
        GUILayout.BeginArea(new Rect(10, 10, Screen.width - 20, Screen.height - 20));
        if (world == null || world.View == null)
        {
            GUILayout.Label("Connecting...");
            GUILayout.EndArea();
            return;
        }
        var here = world.Here;
        GUILayout.Label(here.Name + " (world v" + world.Version + "; " + world.TimeOfDay + ", " + world.Weather + ")");
        GUILayout.Label(here.Description);
        GUILayout.Label("Players here: " + string.Join(", ", world.PlayersIn(here.Id).ToArray()));
        foreach (var npc in world.NpcsIn(here.Id))
            if (GUILayout.Button("talk to " + npc.Name))
                Act("talk", new { npc_id = npc.Id });
        foreach (var spot in here.Spots)
            foreach (var item in spot.Items)
                if (GUILayout.Button("collect " + item.SemanticName + " (" + spot.Name + ")"))
                    Act("collect_item", new { instance_id = item.InstanceId });
        foreach (var exit in here.Exits)
            if (GUILayout.Button("go to " + AreaName(exit)))
                Act("go", new { destination = exit });
        GUILayout.Label("Inventory: " + string.Join(", ", world.Inventory.Select(i => i.SemanticName).ToArray()));
        chatLine = GUILayout.TextField(chatLine);
        if (GUILayout.Button("say") && chatLine.Trim().Length > 0)
            Chat(chatLine);
        scroll = GUILayout.BeginScrollView(scroll);
        foreach (var line in Enumerable.Reverse(log))
            GUILayout.Label(line);
        GUILayout.EndScrollView();
        GUILayout.EndArea();
    }

    private async void Act(string action, object args)
    {
        try
        {
            var answer = await client.ActAsync(action, args);
            Note(action + ": " + answer["message"]);
        }
        catch (Exception e)
        {
            Note(action + " failed: " + e.Message);
        }
    }

    private async void Chat(string words)
    {
        chatLine = "";
        try
        {
            var done = await client.ChatAsync(words);  // chunks arrive as ChatChunkReceived, after the world changed
            Note("chat: " + (done.Error != null ? done.Error.ToString() : done.Action + " " + (done.Success ? "ok" : "refused")));
        }
        catch (Exception e)
        {
            Note("chat failed: " + e.Message);
        }
    }

    private string AreaName(string areaId)
    {
        var area = client.World.Area(areaId);
        return area == null ? areaId : area.Name;
    }

    private string NpcName(string npcId)
    {
        var npc = client.World.Npc(npcId);
        return npc == null ? npcId : npc.Name;
    }

    private void Note(string line)
    {
        log.Add(DateTime.Now.ToString("HH:mm:ss") + " " + line);
        if (log.Count > 200)
            log.RemoveAt(0);
    }
}
