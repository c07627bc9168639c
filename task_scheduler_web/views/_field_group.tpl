<fieldset class="group group-{{group.name}}">
  <legend>{{t('group.' + group.name)}}</legend>
  % for field in group.fields:
  <div class="field{{' only-' + field.only if field.only else ''}}">
    % if field.widget == 'checkbox':
    <input type="hidden" name="{{field.name}}" value="0">
    <label class="choice"><input type="checkbox" id="f-{{field.name}}" name="{{field.name}}" value="1" {{'checked' if form[field.name] == '1' else ''}}> {{t('field.' + field.name)}}</label>
    % else:
    <label for="f-{{field.name}}">{{t('field.' + field.name)}}</label>
    % if field.widget == 'textarea':
    <textarea id="f-{{field.name}}" name="{{field.name}}" rows="3" class="{{'mono' if field.mono else ''}}" placeholder="{{field.placeholder}}">{{form[field.name]}}</textarea>
    % else:
    <input id="f-{{field.name}}" name="{{field.name}}" value="{{form[field.name]}}" class="{{'mono' if field.mono else ''}}" placeholder="{{field.placeholder}}" {{'inputmode=decimal' if field.widget == 'number' else ''}}>
    % end
    % end
    <p class="hint">{{t('hint.' + field.name)}}</p>
    % include('_field_error.tpl', name=field.name)
  </div>
  % end
</fieldset>
