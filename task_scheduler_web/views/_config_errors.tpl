<ul class="config-errors" data-testid="config-errors">
  % for detail in config_errors:
  <li>
    <span class="mono where">{{detail['where']}}</span>
    <span class="what" lang="{{detail['lang']}}">{{detail['message']}}</span>
  </li>
  % end
</ul>
% if lang != 'en' or not config_errors:
<details class="as-logged">
  <summary>{{t('config.as_logged')}}</summary>
  <pre class="pre pre-error" lang="en">{{config['error']}}</pre>
</details>
% end
