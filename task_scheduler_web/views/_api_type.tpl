% for part in parts:
% if 'ref' in part:
<a href="#schema-{{part['ref']}}">{{part['ref']}}</a>
% else:
{{part['text']}}
% end
% end
