using Newtonsoft.Json.Linq;

namespace Gaia.Realtime
{
    /// <summary>One item as the world shows it (read-only; <see cref="ToJson"/> gives a copy of every field).</summary>
    public sealed class Item
    {
        private readonly JObject json;

        internal Item(JObject json)
        {
            this.json = json;
        }

        /// <summary>The unique id actions name (`dream_bottle_1`).</summary>
        public string InstanceId { get { return Text("instance_id"); } }

        /// <summary>What kind of item it is (`dream_bottle`).</summary>
        public string TemplateId { get { return Text("template_id"); } }

        /// <summary>The item's type (`collectible`, ...).</summary>
        public string Type { get { return Text("type"); } }

        /// <summary>The name a player would use (`dream bottle`).</summary>
        public string SemanticName { get { return Text("semantic_name"); } }

        /// <summary>The item's description text.</summary>
        public string Description { get { return Text("description"); } }

        /// <summary>A copy of the item's JSON, every field included.</summary>
        public JObject ToJson()
        {
            return (JObject)json.DeepClone();
        }

        /// <summary>The instance id.</summary>
        public override string ToString()
        {
            return InstanceId;
        }

        private string Text(string key)
        {
            var value = json[key];
            return value == null || value.Type == JTokenType.Null ? null : value.ToString();
        }
    }
}
